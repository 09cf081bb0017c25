#ifndef CHUB_HIREDIS_SHIM_H
#define CHUB_HIREDIS_SHIM_H
// Debian 12 ships hiredis 0.14.1. Only the reader API, freeReplyObject and redisFormatCommandArgv are used:
// the rest of hiredis does its own socket I/O, and its variadic functions cannot be called from Swift.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
