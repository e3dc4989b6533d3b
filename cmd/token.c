/*
 * token.c: `pneumo token add NAME | list | revoke NAME` over the tokens file of cmd/token.h, and
 * the loader and constant-time check that `pneumo serve` uses. The file is created mode 0600
 * and rewritten atomically (tmp, fsync, rename) on revoke. Tests: tests/serve.sh.
 */
#include "cmd/token.h"
#include "cmd/cli.h"
#include "cmd/results.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *pr_tokens_path(const char *flag)
{
    if (flag) return flag;
    const char *env = getenv("PNEUMO_TOKENS");
    return env && *env ? env : "./pneumo-tokens";
}

void pr_tokens_free(pr_tokens *t)
{
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

static int unhex(const char *s, unsigned char *out, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("._@-", *s)))
            return 0;
    return 1;
}

int pr_tokens_load(const char *path, int missing_ok, pr_tokens *t, char *err, size_t errlen)
{
    t->v    = NULL;
    t->n    = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT && missing_ok) return 0;
        snprintf(err, errlen, "cannot read the tokens file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int lineno = 0, cap = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char name[128], hash[128], when[128] = "";
        int k = sscanf(line, "%127s %127s %127s", name, hash, when);
        if (k < 2 || strncmp(hash, "sha256:", 7) != 0 || strlen(hash) != 7 + 64 || !name_ok(name)) {
            snprintf(err, errlen,
                     "%s line %d: expected \"NAME sha256:<64 hex> TIME\", got \"%.60s\"", path,
                     lineno, line);
            goto fail;
        }
        if (t->n == cap) {
            cap         = cap ? 2 * cap : 16;
            pr_token *v = realloc(t->v, sizeof(pr_token) * (size_t)cap);
            if (!v) {
                snprintf(err, errlen, "out of memory reading %s", path);
                goto fail;
            }
            t->v = v;
        }
        pr_token *e = &t->v[t->n];
        if (unhex(hash + 7, e->hash, 32)) {
            snprintf(err, errlen, "%s line %d: the hash is not 64 lower-case hex digits", path,
                     lineno);
            goto fail;
        }
        snprintf(e->name, sizeof(e->name), "%.63s", name);
        snprintf(e->created, sizeof(e->created), "%.39s", when);
        t->n++;
    }
    fclose(f);
    return 0;
fail:
    fclose(f);
    pr_tokens_free(t);
    return -1;
}

int pr_tokens_check(const pr_tokens *t, const char *token, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(token, len, md, &n, EVP_sha256(), NULL);
    int found = -1;
    for (int i = 0; i < t->n; i++)
        if (CRYPTO_memcmp(md, t->v[i].hash, 32) == 0 && found < 0) found = i;
    return found;
}

// ---- the command ----

static int token_add(const char *path, const char *name)
{
    if (!name_ok(name))
        return cli_fail("token", EXIT_USAGE,
                        "expected a NAME of 1..63 characters from A-Z a-z 0-9 . _ @ -, got \"%s\"",
                        name);
    pr_tokens t;
    char err[600];
    if (pr_tokens_load(path, 1, &t, err, sizeof(err)))
        return cli_fail("token", EXIT_FAIL, "%s", err);
    for (int i = 0; i < t.n; i++)
        if (strcmp(t.v[i].name, name) == 0) {
            pr_tokens_free(&t);
            return cli_fail("token", EXIT_FAIL,
                            "a token named \"%s\" exists already in %s; revoke it first "
                            "(pneumo token revoke %s) or pick another name",
                            name, path, name);
        }
    pr_tokens_free(&t);
    unsigned char raw[32], md[EVP_MAX_MD_SIZE], b64[64];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return cli_fail("token", EXIT_FAIL, "the system random generator failed");
    int bl       = EVP_EncodeBlock(b64, raw, sizeof(raw));
    char tok[80] = "pn_";
    int k        = 3;
    for (int i = 0; i < bl && b64[i] != '='; i++)
        tok[k++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    tok[k]     = 0;
    unsigned n = 0;
    EVP_Digest(tok, (size_t)k, md, &n, EVP_sha256(), NULL);
    char hx[65], now[40];
    for (unsigned i = 0; i < n; i++)
        sprintf(hx + 2 * i, "%02x", md[i]);
    pr_iso_now(now, sizeof(now));
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return cli_fail("token", EXIT_FAIL, "cannot write %s: %s", path, strerror(errno));
    char line[256];
    int ll  = snprintf(line, sizeof(line), "%s sha256:%s %s\n", name, hx, now);
    int bad = write(fd, line, (size_t)ll) != ll || fsync(fd) != 0;
    bad |= close(fd) != 0;
    if (bad) return cli_fail("token", EXIT_FAIL, "writing %s: %s", path, strerror(errno));
    printf("%s\n", tok);
    fprintf(stderr,
            "pneumo token: added \"%s\" to %s; the token above is shown only this once: give it "
            "to the client as \"Authorization: Bearer <token>\"\n",
            name, path);
    return EXIT_OK;
}

static int token_list(const char *path)
{
    pr_tokens t;
    char err[600];
    if (pr_tokens_load(path, 1, &t, err, sizeof(err)))
        return cli_fail("token", EXIT_FAIL, "%s", err);
    for (int i = 0; i < t.n; i++)
        printf("%-24s %s sha256:%02x%02x%02x%02x...\n", t.v[i].name, t.v[i].created, t.v[i].hash[0],
               t.v[i].hash[1], t.v[i].hash[2], t.v[i].hash[3]);
    if (t.n == 0) fprintf(stderr, "pneumo token: no tokens in %s\n", path);
    pr_tokens_free(&t);
    return EXIT_OK;
}

static int token_revoke(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    if (!f) return cli_fail("token", EXIT_FAIL, "cannot read %s: %s", path, strerror(errno));
    size_t pl = strlen(path) + 8;
    char *tmp = malloc(pl);
    if (!tmp) {
        fclose(f);
        return cli_fail("token", EXIT_FAIL, "out of memory");
    }
    snprintf(tmp, pl, "%s.tmp", path);
    int fd  = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *o = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!o) {
        int e = errno;
        if (fd >= 0) close(fd);
        fclose(f);
        free(tmp);
        return cli_fail("token", EXIT_FAIL, "cannot write %s.tmp: %s", path, strerror(e));
    }
    char line[512], first[128];
    int found = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%127s", first) == 1 && strcmp(first, name) == 0) {
            found++;
            continue;
        }
        fputs(line, o);
    }
    fclose(f);
    int bad = fflush(o) != 0 || fsync(fileno(o)) != 0;
    bad |= fclose(o) != 0;
    int rc = EXIT_OK;
    if (!found) {
        unlink(tmp);
        rc = cli_fail("token", EXIT_FAIL, "no token named \"%s\" in %s (see pneumo token list)",
                      name, path);
    } else if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        rc = cli_fail("token", EXIT_FAIL, "rewriting %s: %s", path, strerror(errno));
    } else {
        fprintf(stderr, "pneumo token: revoked \"%s\" in %s\n", name, path);
    }
    free(tmp);
    return rc;
}

int cmd_token(int argc, char **argv)
{
    const char *file = NULL;
    cli_opt opts[]   = {
          {"tokens", OPT_STR, &file, 0, 0, "FILE",
           "the tokens file (default $PNEUMO_TOKENS, else ./pneumo-tokens)"},
    };
    cli_cmd cmd = {"token",
                   "add NAME | list | revoke NAME [--tokens FILE]",
                   "Manage the API tokens of `pneumo serve` (only their SHA-256 is stored).",
                   opts,
                   1,
                   1,
                   2};
    char *pos[argc + 1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    const char *path = pr_tokens_path(file);
    if (strcmp(pos[0], "add") == 0 && npos == 2) return token_add(path, pos[1]);
    if (strcmp(pos[0], "list") == 0 && npos == 1) return token_list(path);
    if (strcmp(pos[0], "revoke") == 0 && npos == 2) return token_revoke(path, pos[1]);
    return cli_fail("token", EXIT_USAGE,
                    "expected `add NAME`, `list` or `revoke NAME`, got \"%s\"%s (see pneumo token "
                    "--help)",
                    pos[0], npos == 2 ? " with a name" : "");
}
