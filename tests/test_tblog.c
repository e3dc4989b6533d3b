/*
 * test_tblog.c: TensorBoard event files: CRC32C against its published check value, then a file
 * written by cmd/tblog.c read back by the independent parser tests/tb_check.py (stdlib Python).
 */
#include "cmd/tblog.h"
#include "tests/check.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    // RFC 3720 / iSCSI check value of CRC-32C.
    CHECK(tb_crc32c("123456789", 9) == 0xE3069283u);
    char dir[] = "/tmp/pneumo-tb-XXXXXX", err[256];
    CHECK(mkdtemp(dir) != NULL);
    tb_writer *w = tb_open(dir, err, sizeof(err));
    CHECK_MSG(w != NULL, "%s", err);
    if (!w) return check_summary("test_tblog");
    CHECK(tb_scalar(w, "epoch_loss", 0, 0.693) == 0);
    CHECK(tb_scalar(w, "epoch_loss", 1, 0.5) == 0);
    CHECK(tb_scalar(w, "val_auc", 1, 0.875) == 0);
    char path[1024], cmd[2200];
    snprintf(path, sizeof(path), "%s", tb_path(w));
    CHECK(tb_close(w) == 0);
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        printf("SKIP part: no python3 for the independent parser\n");
    } else {
        snprintf(cmd, sizeof(cmd), "python3 tests/tb_check.py '%s' > '%s/out.txt'", path, dir);
        CHECK_MSG(system(cmd) == 0, "tb_check.py rejected %s", path);
        snprintf(cmd, sizeof(cmd), "%s/out.txt", dir);
        FILE *f       = fopen(cmd, "r");
        char buf[512] = "";
        size_t n      = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        buf[n]        = 0;
        if (f) fclose(f);
        printf("%s", buf);
        CHECK(strstr(buf, "0 epoch_loss 0.69300001") != NULL);
        CHECK(strstr(buf, "1 epoch_loss 0.5\n") != NULL);
        CHECK(strstr(buf, "1 val_auc 0.875\n") != NULL);
        // A flipped byte must be caught by the parser (the check can fail).
        FILE *g = fopen(path, "r+b");
        if (g) {
            fseek(g, 40, SEEK_SET);
            int c = fgetc(g);
            fseek(g, 40, SEEK_SET);
            fputc(c ^ 0x55, g);
            fclose(g);
        }
        snprintf(cmd, sizeof(cmd), "python3 tests/tb_check.py '%s' 2>/dev/null >/dev/null", path);
        CHECK(system(cmd) != 0);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_summary("test_tblog");
}
