/*
 * main.c: the `pneumo` command: dispatches to a subcommand. Only cmd/ has main(), parses argv
 * and decides exit codes (0 success, 1 failure, 2 usage error). See README.md for the reference.
 */
#include "cmd/cli.h"
#include "kernels/nk.h"

#include <signal.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"info", cmd_info, "print a model's layer table, parameter counts and metadata"},
    {"init", cmd_init, "write a new model file with Keras's initialisation"},
    {"weights", cmd_weights, "import pretrained weights (weights import KERAS.h5 --out M)"},
    {"train", cmd_train, "fine-tune the ResNet50 on class folders (local or S3)"},
    {"eval", cmd_eval, "evaluate a model on class folders: metrics, curves, HTML report"},
    {"predict", cmd_predict, "run a model over image files and print the probabilities"},
    {"worker", cmd_worker, "consume a prediction queue from Redis (many workers share one batch)"},
    {"serve", cmd_serve,
     "the HTTP API and web page: upload an X-ray, get the result and a heat map"},
    {"token", cmd_token, "manage the API tokens of serve (token add NAME | list | revoke NAME)"},
    {"augment", cmd_augment, "show what training sees: transform an image as augmentation does"},
    {"bench", cmd_bench, "measure kernels and the whole model (bench peak|gemm|model)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: pneumo COMMAND [OPTIONS]\n\n"
               "pneumo fine-tunes and runs a Keras ResNet50 v1 that detects pneumonia in chest "
               "X-rays.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "version", "print the version");
    fprintf(f, "\nRun `pneumo COMMAND --help` for a command's options. Environment: "
               "PNEUMO_VERBOSE=1 logs to stderr;\nPNEUMO_KERNELS=ref|avx2 forces a kernel set.\n");
}

int main(int argc, char **argv)
{
    // libcurl runs with CURLOPT_NOSIGNAL: a peer that closes a socket must not kill us.
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *c = argv[1];
    if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0 || strcmp(c, "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(c, "version") == 0 || strcmp(c, "--version") == 0) {
        printf("pneumo %s\ncpu kernels: %s\n", NT_VERSION, nk_isa_name(nk_cpu_detect()));
#ifdef NT_HAVE_CUDA
        int ndev       = nk_cuda_device_count();
        char name[256] = "";
        if (ndev > 0) nk_cuda_device_name(0, name, sizeof(name));
        printf("cuda: built, %d device%s%s%s\n", ndev, ndev == 1 ? "" : "s", ndev ? ": " : "",
               name);
#else
        printf("cuda: not built\n");
#endif
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(c, commands[i].name) == 0) return commands[i].fn(argc - 2, argv + 2);
    fprintf(
        stderr,
        "pneumo: unknown command \"%s\"; expected one of info, init, weights, "
        "train, predict, worker, serve, token, eval, augment, bench, version (see pneumo --help)\n",
        c);
    return EXIT_USAGE;
}
