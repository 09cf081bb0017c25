#ifndef CHUB_CRYPTO_SHIM_H
#define CHUB_CRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
#endif
