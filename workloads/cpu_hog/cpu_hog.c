/*
 * cpu_hog: N threads that keep a CPU busy at a duty cycle for a duration.
 *
 * Each thread works for duty% of every 100 ms period and sleeps for the
 * rest, so 50 % means half a vCPU per thread. Work is counted in "ops" (one
 * op = a fixed block of integer arithmetic), so the result shows how much
 * CPU a thread really got: a vCPU that shares its pCPU does fewer ops.
 *
 * Output on stdout at the end, `key=value`, one line per thread then a total:
 *   thread=0 ops=51234 ops_per_s=5123.4 cpu_s=9.98
 *   total threads=1 duty_pct=100 duration_s=10.00 ops=51234 ops_per_s=5123.4 cpu_s=9.98 busy_pct=99.8
 * busy_pct is the CPU time the threads got over threads x duration.
 *
 * Build: gcc -O2 -static -pthread cpu_hog.c -o cpu_hog
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PERIOD_NS 100000000L
#define MAX_THREADS 1024
/* Iterations of the mixing loop in one op: ~10 us on a 2020s x86 core. */
#define OP_ITERATIONS 4096

struct worker {
	pthread_t id;
	long duty_pct;
	double until_s;
	uint64_t ops;
	double cpu_s;
	double wall_s;
};

static double clock_s(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A block of arithmetic the compiler cannot drop: its result is kept. */
static uint64_t one_op(uint64_t x)
{
	for (int i = 0; i < OP_ITERATIONS; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	return x;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	volatile uint64_t sink = 0;
	uint64_t x = 88172645463325252ull ^ (uintptr_t)w;
	double start = clock_s(CLOCK_MONOTONIC);
	double busy_s = PERIOD_NS / 1e9 * w->duty_pct / 100.0;
	struct timespec period_start;
	clock_gettime(CLOCK_MONOTONIC, &period_start);
	while (clock_s(CLOCK_MONOTONIC) < w->until_s) {
		double period_s = period_start.tv_sec + period_start.tv_nsec / 1e9;
		double busy_until = period_s + busy_s;
		if (busy_until > w->until_s)
			busy_until = w->until_s;
		do {
			x = one_op(x);
			w->ops++;
		} while (clock_s(CLOCK_MONOTONIC) < busy_until);
		sink = x;
		/* Sleep to the start of the next period (absolute, so no drift). */
		period_start.tv_nsec += PERIOD_NS;
		if (period_start.tv_nsec >= 1000000000L) {
			period_start.tv_nsec -= 1000000000L;
			period_start.tv_sec++;
		}
		if (w->duty_pct < 100)
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &period_start, NULL);
	}
	(void)sink;
	w->cpu_s = clock_s(CLOCK_THREAD_CPUTIME_ID);
	w->wall_s = clock_s(CLOCK_MONOTONIC) - start;
	return NULL;
}

static long number(const char *arg, const char *name, long min, long max)
{
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0 || arg[n] != '=')
		return -1;
	char *end;
	errno = 0;
	long v = strtol(arg + n + 1, &end, 10);
	if (errno || end == arg + n + 1 || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "cpu_hog: %s needs a whole number from %ld to %ld\n", name, min, max);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	long threads = 1, duty_pct = 100, duration_s = 60;
	for (int i = 1; i < argc; i++) {
		long v;
		if ((v = number(argv[i], "--threads", 1, MAX_THREADS)) >= 0)
			threads = v;
		else if ((v = number(argv[i], "--duty-pct", 1, 100)) >= 0)
			duty_pct = v;
		else if ((v = number(argv[i], "--duration-s", 1, 86400)) >= 0)
			duration_s = v;
		else {
			fprintf(stderr, "usage: cpu_hog [--threads=N] [--duty-pct=1..100] "
					"[--duration-s=N]\n");
			return 2;
		}
	}

	struct worker *workers = calloc(threads, sizeof *workers);
	if (!workers)
		return 1;
	double start = clock_s(CLOCK_MONOTONIC);
	for (long t = 0; t < threads; t++) {
		workers[t].duty_pct = duty_pct;
		workers[t].until_s = start + duration_s;
		int err = pthread_create(&workers[t].id, NULL, work, &workers[t]);
		if (err) {
			fprintf(stderr, "cpu_hog: cannot start thread %ld: %s\n", t, strerror(err));
			return 1;
		}
	}
	uint64_t ops = 0;
	double cpu_s = 0;
	for (long t = 0; t < threads; t++) {
		struct worker *w = &workers[t];
		pthread_join(w->id, NULL);
		printf("thread=%ld ops=%llu ops_per_s=%.1f cpu_s=%.2f\n", t, (unsigned long long)w->ops,
		       w->ops / w->wall_s, w->cpu_s);
		ops += w->ops;
		cpu_s += w->cpu_s;
	}
	double elapsed_s = clock_s(CLOCK_MONOTONIC) - start;
	printf("total threads=%ld duty_pct=%ld duration_s=%.2f ops=%llu ops_per_s=%.1f cpu_s=%.2f "
	       "busy_pct=%.1f\n",
	       threads, duty_pct, elapsed_s, (unsigned long long)ops, ops / elapsed_s, cpu_s,
	       100.0 * cpu_s / (threads * elapsed_s));
	return 0;
}
