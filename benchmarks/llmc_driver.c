// Times llm.c's CPU training step (train_gpt2.c) for benchmarks/bench_train.py.
//
// Built by bench_train.py as:  gcc -Ofast -march=native -fopenmp -I <llm.c checkout> llmc_driver.c -lm
// TESTING drops train_gpt2.c's own main(); everything else (gpt2_build_from_checkpoint, gpt2_forward,
// gpt2_zero_grad, gpt2_backward, gpt2_update) is llm.c's code, unchanged.
//
// usage: llmc_driver MODEL.bin BATCHES.bin B T NBATCHES WARMUP STEPS LR BETA1 BETA2 EPS WEIGHT_DECAY
//   MODEL.bin    an llm.c version-3 checkpoint (bench_train.py writes a random npgpt model with npgpt.gpt2.llmc)
//   BATCHES.bin  NBATCHES pairs of int32 (B, T) arrays, inputs then targets (the batches every framework uses)
// One step = gpt2_forward, gpt2_zero_grad, gpt2_backward, gpt2_update (llm.c's own training-loop order);
// step i uses batch i % NBATCHES.  Prints one line "RESULT {json}" with the timings (seconds), resident
// memory (MiB, from /proc/self/status) and the other load on the machine during the timed steps.

#define TESTING
#include "train_gpt2.c"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// a field of /proc/self/status ("VmRSS", "VmHWM") in MiB; -1 where unavailable
static double status_mib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) { return -1.0; }
    char line[256];
    size_t n = strlen(field);
    double out = -1.0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            out = atof(line + n + 1) / 1024.0;  // the value is in kB
            break;
        }
    }
    fclose(f);
    return out;
}

// reset VmHWM to the current RSS (Linux >= 4.0); 1 on success
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL) { return 0; }
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

// jiffies: busy time of the whole machine, hypervisor steal, and this process's utime + stime
static void cpu_snapshot(long long *busy, long long *steal, long long *mine) {
    *busy = *steal = *mine = 0;
    long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f != NULL) {
        if (fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]) == 8) {
            *busy = v[0] + v[1] + v[2] + v[5] + v[6];  // user nice system irq softirq
            *steal = v[7];
        }
        fclose(f);
    }
    f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        char buf[4096];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        buf[len] = '\0';
        fclose(f);
        char *p = strrchr(buf, ')');  // fields after the command name; utime and stime are the 12th and 13th
        long long ut = 0, st = 0;
        if (p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &ut, &st) == 2) {
            *mine = ut + st;
        }
    }
}

static void print_list(const char *name, const double *xs, int n) {
    printf("\"%s\": [", name);
    for (int i = 0; i < n; i++) { printf("%s%.6f", i ? ", " : "", xs[i]); }
    printf("], ");
}

int main(int argc, char **argv) {
    if (argc != 13) {
        fprintf(stderr, "usage: %s MODEL.bin BATCHES.bin B T NBATCHES WARMUP STEPS LR BETA1 BETA2 EPS WD\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *batch_path = argv[2];
    int B = atoi(argv[3]), T = atoi(argv[4]), nbatches = atoi(argv[5]), warmup = atoi(argv[6]);
    int steps = atoi(argv[7]);
    float lr = (float)atof(argv[8]), beta1 = (float)atof(argv[9]), beta2 = (float)atof(argv[10]);
    float eps = (float)atof(argv[11]), wd = (float)atof(argv[12]);
    if (B < 1 || T < 1 || nbatches < 1 || warmup < 0 || steps < 1) {
        fprintf(stderr, "llmc_driver: bad sizes\n");
        return 2;
    }
    double rss_start = status_mib("VmRSS");  // the analogue of the Python workers' "RSS after imports"

    GPT2 model;
    gpt2_build_from_checkpoint(&model, model_path);
    if (T > model.config.max_seq_len) {
        fprintf(stderr, "llmc_driver: T=%d exceeds the checkpoint's max_seq_len=%d\n", T, model.config.max_seq_len);
        return 2;
    }
    size_t bt = (size_t)B * (size_t)T;
    int *tokens = (int *)mallocCheck(2 * bt * (size_t)nbatches * sizeof(int));  // (NBATCHES, 2, B, T)
    FILE *bf = fopenCheck(batch_path, "rb");
    freadCheck(tokens, sizeof(int), 2 * bt * (size_t)nbatches, bf);
    fcloseCheck(bf);
    double rss_built = status_mib("VmRSS");

    double *warm_s = (double *)mallocCheck((size_t)(warmup > 0 ? warmup : 1) * sizeof(double));
    double *step_s = (double *)mallocCheck((size_t)steps * sizeof(double));
    float first_loss = 0.0f, loss = 0.0f;
    int hwm_reset = 0;
    double hwm_warm = 0.0, t_timed = 0.0, other_load = 0.0, steal = 0.0;
    long long busy0 = 0, steal0 = 0, mine0 = 0;
    double wall0 = 0.0;
    for (int i = 0; i < warmup + steps; i++) {
        if (i == warmup) {  // start of the timed steps: peak reset, load snapshot
            hwm_warm = status_mib("VmHWM");
            hwm_reset = reset_peak();
            cpu_snapshot(&busy0, &steal0, &mine0);
            wall0 = now_s();
        }
        int *x = tokens + (size_t)(i % nbatches) * 2 * bt;
        int *y = x + bt;
        double t0 = now_s();
        gpt2_forward(&model, x, y, (size_t)B, (size_t)T);
        gpt2_zero_grad(&model);
        gpt2_backward(&model);
        gpt2_update(&model, lr, beta1, beta2, eps, wd, i + 1);
        double dt = now_s() - t0;
        loss = model.mean_loss;
        if (i == 0) { first_loss = loss; }
        if (i < warmup) { warm_s[i] = dt; } else { step_s[i - warmup] = dt; }
    }
    t_timed = now_s() - wall0;
    long long busy1, steal1, mine1;
    cpu_snapshot(&busy1, &steal1, &mine1);
    double hz = (double)sysconf(_SC_CLK_TCK);
    if (t_timed > 0) {
        other_load = ((double)(busy1 - busy0) - (double)(mine1 - mine0)) / hz / t_timed;
        steal = (double)(steal1 - steal0) / hz / t_timed;
        if (other_load < 0) { other_load = 0; }
        if (steal < 0) { steal = 0; }
    }
    double peak = status_mib("VmHWM");

    printf("RESULT {");
    print_list("warmup_s", warm_s, warmup);
    print_list("step_s", step_s, steps);
    printf("\"seconds\": %.6f, \"nparams\": %zu, \"rss_imports\": %.2f, \"rss_built\": %.2f, \"peak_warmup\": %.2f, "
           "\"peak\": %.2f, \"hwm_reset\": %s, \"first_loss\": %.6f, \"loss\": %.6f, \"other_load\": %.4f, "
           "\"steal\": %.4f}\n",
           t_timed, model.num_parameters, rss_start, rss_built, hwm_warm, peak, hwm_reset ? "true" : "false",
           first_loss, loss, other_load, steal);
    fflush(stdout);
    gpt2_free(&model);
    free(tokens);
    free(warm_s);
    free(step_s);
    return 0;
}
