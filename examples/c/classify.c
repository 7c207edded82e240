/* classify: run a network compiled ahead of time by graphconv and print the top classes.
 *
 *   graphconv compile ../../specs/resnet18.gc --target llvm-aot --name model -o build
 *   cc -O2 -Ibuild classify.c build/model.o -lm -lpthread -o classify
 *   ./classify build/model.weights [input.f32 [output.f32]] [-t THREADS]
 *
 * input.f32 holds raw float32 values, batch * MODEL_INPUT0_ELEMENTS of them (C order, [N, C, H, W]); without it,
 * one sample of a fixed pattern is used. output.f32 receives the first output as raw float32 values.
 * The program owns every buffer: the weights and the arena are 64-byte aligned, allocated once, and freed at the
 * end; with -t T it runs the network on T threads that call model_run together. */

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#if MODEL_NUM_INPUTS != 1
#error "this example feeds networks with one input"
#endif

static void *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t padded = ((size_t)(n > 0 ? n : 1) + 63) / 64 * 64;
    void *buf = aligned_alloc(64, padded);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "classify: cannot read %s\n", path);
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

struct job {
    const model_float *const *inputs;
    model_float *const *outputs;
    void *arena;
    const void *weights;
    int64_t batch, tid, nthreads;
    int64_t *barrier;
};

static void *worker(void *arg) {
    struct job *j = arg;
    model_run(j->inputs, j->outputs, j->arena, j->weights, j->batch, j->tid, j->nthreads, j->barrier);
    return NULL;
}

int main(int argc, char **argv) {
    const char *paths[3] = {NULL, NULL, NULL};
    int npaths = 0, threads = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (npaths < 3) {
            paths[npaths++] = argv[i];
        }
    }
    if (npaths < 1 || threads < 1 || threads > 256) {
        fprintf(stderr, "usage: classify MODEL.weights [INPUT.f32 [OUTPUT.f32]] [-t THREADS]\n");
        return 2;
    }

    size_t wbytes = 0;
    void *weights = read_file(paths[0], &wbytes);
    if (!weights) return 1;
    if (wbytes != MODEL_WEIGHTS_BYTES) {
        fprintf(stderr, "classify: %s has %zu bytes; the compiled model expects %llu\n", paths[0], wbytes,
                (unsigned long long)MODEL_WEIGHTS_BYTES);
        return 1;
    }

    int64_t batch = 1;
    model_float *input;
    if (paths[1]) {
        size_t ibytes = 0;
        input = read_file(paths[1], &ibytes);
        if (!input) return 1;
        size_t sample = MODEL_INPUT0_ELEMENTS * sizeof(model_float);
        if (ibytes == 0 || ibytes % sample != 0 || (!MODEL_BATCHED && ibytes != sample)) {
            fprintf(stderr, "classify: %s has %zu bytes, not a whole number of %zu-byte samples\n", paths[1], ibytes,
                    sample);
            return 1;
        }
        batch = (int64_t)(ibytes / sample);
    } else {
        input = aligned_alloc(64, (MODEL_INPUT0_ELEMENTS * sizeof(model_float) + 63) / 64 * 64);
        for (size_t i = 0; i < MODEL_INPUT0_ELEMENTS; i++) input[i] = (model_float)((double)(i % 255) / 255.0 - 0.5);
    }

    model_float *outputs[MODEL_NUM_OUTPUTS];
    for (int k = 0; k < MODEL_NUM_OUTPUTS; k++) {
        outputs[k] = malloc((size_t)batch * model_output_elements[k] * sizeof(model_float));
        if (!outputs[k]) {
            fprintf(stderr, "classify: out of memory\n");
            return 1;
        }
    }
    model_float *output = outputs[0];
    size_t abytes = model_arena_bytes(batch, threads);
    void *arena = aligned_alloc(64, (abytes + 63) / 64 * 64 + 64);
    const model_float *inputs[1] = {input};
    if (!arena) {
        fprintf(stderr, "classify: out of memory\n");
        return 1;
    }

    if (threads == 1) {
        model_run1(inputs, outputs, arena, weights, batch);
    } else {
        int64_t barrier[8] __attribute__((aligned(64))) = {0};
        pthread_t tids[256];
        struct job jobs[256];
        for (int t = 0; t < threads; t++) {
            jobs[t] = (struct job){inputs, outputs, arena, weights, batch, t, threads, barrier};
            if (t > 0 && pthread_create(&tids[t], NULL, worker, &jobs[t]) != 0) {
                fprintf(stderr, "classify: cannot start thread %d\n", t);
                return 1;
            }
        }
        worker(&jobs[0]);
        for (int t = 1; t < threads; t++) pthread_join(tids[t], NULL);
    }

    size_t classes = MODEL_OUTPUT0_ELEMENTS;
    for (int64_t n = 0; n < batch; n++) {
        const model_float *y = output + (size_t)n * classes;
        printf("sample %lld:", (long long)n);
        int taken[5] = {-1, -1, -1, -1, -1};
        for (int k = 0; k < 5 && (size_t)k < classes; k++) {
            int best = -1;
            for (size_t c = 0; c < classes; c++) {
                int used = 0;
                for (int q = 0; q < k; q++) used |= taken[q] == (int)c;
                if (!used && (best < 0 || y[c] > y[best])) best = (int)c;
            }
            taken[k] = best;
            printf(" %d (%.4g)", best, (double)y[best]);
        }
        printf("\n");
    }
    if (paths[2]) {
        FILE *f = fopen(paths[2], "wb");
        if (!f || fwrite(output, sizeof(model_float), (size_t)batch * classes, f) != (size_t)batch * classes) {
            fprintf(stderr, "classify: cannot write %s\n", paths[2]);
            return 1;
        }
        fclose(f);
    }
    free(arena);
    for (int k = 0; k < MODEL_NUM_OUTPUTS; k++) free(outputs[k]);
    free(input);
    free(weights);
    return 0;
}
