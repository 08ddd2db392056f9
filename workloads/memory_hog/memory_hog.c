/*
 * memory_hog: the memory-pressure pattern of vmlab's lab exercises.
 *
 * Each round picks a size (fixed, or random up to a cap), maps it and writes
 * every page so the memory is really resident, holds it, then releases it at
 * a given rate and, after the last round, exits. It can grow at a given rate
 * instead of all at once, and loop.
 *
 * Output on stdout, one line per second while it runs (flushed), then one
 * summary line; every value is `key=value`, sizes in MiB, times in seconds:
 *   t_s=3 round=1 phase=hold held_mib=212 target_mib=212
 *   done rounds=1 peak_held_mib=212 fill_mib_per_s=734.2 elapsed_s=57.1
 *
 * Memory is mapped in 1 MiB chunks with mmap/munmap rather than malloc, so a
 * release really gives the pages back to the kernel (malloc may keep freed
 * memory in its heap, which would hide the release from the host).
 *
 * Build: gcc -O2 -static memory_hog.c -o memory_hog
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_BYTES (1024L * 1024L)
#define PAGE_BYTES 4096L
/* Pacing granularity of rate-limited growth and release. */
#define STEP_NS 10000000L

struct options {
	long size_mib; /* 0: random in [1, cap_mib] each round */
	long cap_mib;
	long grow_mib_per_s; /* 0: all at once */
	long hold_s;
	long release_mib_per_s;
	long loops; /* 0: until killed */
	long seed;  /* 0: from the clock and pid */
	int report; /* per-second lines */
};

struct hog {
	const struct options *opt;
	char **chunks;
	long held_mib;
	long target_mib;
	long peak_mib;
	long round;
	const char *phase;
	double start_s;
	long next_report_s;
	double fill_s; /* time spent mapping and writing */
	long filled_mib;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* splitmix64: well-spread sizes even from small seeds, reproducible per --seed. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: memory_hog [--size-mib=N (0: random up to the cap)] [--cap-mib=N]\n"
		"                  [--grow-mib-per-s=N (0: all at once)] [--hold-s=N]\n"
		"                  [--release-mib-per-s=N] [--loops=N (0: forever)]\n"
		"                  [--seed=N (0: from the clock)] [--report=on|off]\n");
	exit(2);
}

/* Parses `--name=value` into *out when arg has that name; 1 if it did. */
static int option(const char *arg, const char *name, long min, long *out)
{
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0 || arg[n] != '=')
		return 0;
	char *end;
	errno = 0;
	long v = strtol(arg + n + 1, &end, 10);
	if (errno || end == arg + n + 1 || *end != '\0' || v < min) {
		fprintf(stderr, "memory_hog: %s needs a whole number >= %ld\n", name, min);
		exit(2);
	}
	*out = v;
	return 1;
}

static struct options parse_args(int argc, char **argv)
{
	struct options o = {
		.size_mib = 0,
		.cap_mib = 256,
		.grow_mib_per_s = 0,
		.hold_s = 50,
		.release_mib_per_s = 100,
		.loops = 1,
		.seed = 0,
		.report = 1,
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--report=on") == 0)
			o.report = 1;
		else if (strcmp(a, "--report=off") == 0)
			o.report = 0;
		else if (!(option(a, "--size-mib", 0, &o.size_mib) ||
			   option(a, "--cap-mib", 1, &o.cap_mib) ||
			   option(a, "--grow-mib-per-s", 0, &o.grow_mib_per_s) ||
			   option(a, "--hold-s", 0, &o.hold_s) ||
			   option(a, "--release-mib-per-s", 1, &o.release_mib_per_s) ||
			   option(a, "--loops", 0, &o.loops) ||
			   option(a, "--seed", 0, &o.seed)))
			usage();
	}
	return o;
}

/* Prints one line for every whole second that has passed since the last one. */
static void tick(struct hog *h)
{
	double elapsed = now_s() - h->start_s;
	while (h->opt->report && elapsed >= h->next_report_s) {
		printf("t_s=%ld round=%ld phase=%s held_mib=%ld target_mib=%ld\n", h->next_report_s,
		       h->round, h->phase, h->held_mib, h->target_mib);
		fflush(stdout);
		h->next_report_s++;
	}
}

/* Maps one more chunk and writes every page of it. */
static void grow_one(struct hog *h)
{
	double t0 = now_s();
	char *p = mmap(NULL, CHUNK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "memory_hog: cannot map more memory after %ld MiB: %s\n", h->held_mib,
			strerror(errno));
		exit(1);
	}
	/* Non-zero data, and a distinct word per page so that no two pages are
	 * alike: neither the zero page nor page merging (KSM) can share them. */
	memset(p, 0x5a, CHUNK_BYTES);
	for (long off = 0; off < CHUNK_BYTES; off += PAGE_BYTES) {
		uint64_t id = (uint64_t)h->held_mib * (CHUNK_BYTES / PAGE_BYTES) + off / PAGE_BYTES;
		memcpy(p + off, &id, sizeof id);
	}
	h->chunks[h->held_mib++] = p;
	if (h->held_mib > h->peak_mib)
		h->peak_mib = h->held_mib;
	h->filled_mib++;
	h->fill_s += now_s() - t0;
}

static void release_one(struct hog *h)
{
	munmap(h->chunks[--h->held_mib], CHUNK_BYTES);
}

static void pause_step(void)
{
	struct timespec ts = {0, STEP_NS};
	nanosleep(&ts, NULL);
}

/* Moves held memory from `from` to `to` MiB at `rate` MiB/s (0: at once). */
static void ramp(struct hog *h, const char *phase, long from, long to, long rate)
{
	h->phase = phase;
	h->target_mib = to;
	double t0 = now_s();
	while (h->held_mib != to) {
		long goal = to;
		if (rate > 0) {
			long moved = (long)((now_s() - t0) * rate);
			goal = from < to ? (from + moved < to ? from + moved : to)
					 : (from - moved > to ? from - moved : to);
		}
		while (h->held_mib < goal) {
			grow_one(h);
			tick(h);
		}
		while (h->held_mib > goal)
			release_one(h);
		tick(h);
		if (h->held_mib != to)
			pause_step();
	}
}

static void hold(struct hog *h, long seconds)
{
	h->phase = "hold";
	double until = now_s() + seconds;
	while (now_s() < until) {
		pause_step();
		tick(h);
	}
}

int main(int argc, char **argv)
{
	struct options opt = parse_args(argc, argv);
	uint64_t rng = opt.seed ? (uint64_t)opt.seed
				: (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	long max_mib = opt.size_mib ? opt.size_mib : opt.cap_mib;
	struct hog h = {
		.opt = &opt,
		.chunks = calloc(max_mib, sizeof(char *)),
		.phase = "start",
		.start_s = now_s(),
		.next_report_s = 1,
	};
	if (!h.chunks) {
		fprintf(stderr, "memory_hog: cannot allocate the table for %ld MiB\n", max_mib);
		return 1;
	}
	for (h.round = 1; opt.loops == 0 || h.round <= opt.loops; h.round++) {
		long size = opt.size_mib;
		if (!size)
			size = 1 + (long)(next_random(&rng) % (uint64_t)opt.cap_mib);
		ramp(&h, "grow", 0, size, opt.grow_mib_per_s);
		hold(&h, opt.hold_s);
		ramp(&h, "release", size, 0, opt.release_mib_per_s);
	}
	printf("done rounds=%ld peak_held_mib=%ld fill_mib_per_s=%.1f elapsed_s=%.2f\n", h.round - 1,
	       h.peak_mib, h.fill_s > 0 ? h.filled_mib / h.fill_s : 0.0, now_s() - h.start_s);
	return 0;
}
