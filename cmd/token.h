/*
 * token.h: API tokens for `pneumo serve`: `pneumo token add|list|revoke` and the file they keep.
 * The file holds one line per token, `NAME sha256:<64 hex> <ISO time>`; only the SHA-256 of a
 * token is stored, the token itself (`pn_` + 43 base64url characters of 32 random bytes) is
 * printed once. The server hashes what a client presents and compares it with every stored hash
 * in constant time. Tests: tests/serve.sh.
 */
#ifndef CMD_TOKEN_H
#define CMD_TOKEN_H

#include <stddef.h>

typedef struct pr_token {
    char name[64];
    unsigned char hash[32];
    char created[40];
} pr_token;

typedef struct pr_tokens {
    pr_token *v;
    int n;
} pr_tokens;

// The tokens file: flag when given, else $PNEUMO_TOKENS, else ./pneumo-tokens.
const char *pr_tokens_path(const char *flag);
// Reads the file into *t (replacing nothing: *t is overwritten; free with pr_tokens_free). A
// missing file is an empty set when missing_ok, else an error. Returns 0, or -1 with a one-line
// reason in err (unreadable file, malformed line N).
int pr_tokens_load(const char *path, int missing_ok, pr_tokens *t, char *err, size_t errlen);
void pr_tokens_free(pr_tokens *t);
// The index of the token whose hash is SHA-256(token), or -1. Every stored hash is compared, in
// constant time (CRYPTO_memcmp), whether or not an earlier one matched.
int pr_tokens_check(const pr_tokens *t, const char *token, size_t len);

#endif
