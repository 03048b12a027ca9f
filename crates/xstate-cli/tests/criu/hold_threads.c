/* Several threads, each holding its own known vector state across sleeps, for the
 * multi-threaded CRIU round trip (tests/cli_criu.rs).
 *
 * Thread t (1 = the main thread, 2..NTHREADS = pthreads) holds
 *   zmm i lane j (64-bit, i = 0..31, j = 0..7) = 0x5a00000000000000 | t << 40 | i << 8 | j
 *   k i = 0xc0de000000000000 | t << 40 | 0x11 * (i + 1)
 * where the CPU has AVX-512F and BW; else ymm 0..15 (lanes 0..3) with the same values.
 *
 * Output, one line each (a thread's lines of one tick are printed together):
 *   "ready avx512 threads N" or "ready avx threads N"   once, first
 *   "thread T tid TID"                                 once per thread, before its first tick
 *   "diff T REG lane J 0xVALUE"                        a lane of thread T differing from its state
 *   "tick T N ok" or "tick T N changed"                after each sleep of thread T
 * A thread keeps what it saw: a changed lane is reported once per tick from then on.
 *
 * One asm block per tick loads the registers from the thread's buffer, sleeps in nanosleep
 * (where a checkpoint freezes the thread) and stores them back, so no compiled code runs
 * while the state is held. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#define NTHREADS 3

struct held {
	uint64_t zmm[32][8] __attribute__((aligned(64)));
	uint64_t k[8];
};

static struct held state[NTHREADS + 1];
static int avx512;
static const struct { long s, ns; } nap = { 0, 200000000 };

static uint64_t want_zmm(int t, int i, int j)
{
	return 0x5a00000000000000ull | (uint64_t)t << 40 | (uint64_t)i << 8 | (uint64_t)j;
}

static uint64_t want_k(int t, int i)
{
	return 0xc0de000000000000ull | (uint64_t)t << 40 | 0x11ull * (uint64_t)(i + 1);
}

#define EACH32(op)                                                                                \
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n" \
	op "\n.endr\n"
#define EACH16(op) ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n" op "\n.endr\n"
#define EACH8(op) ".irp i,0,1,2,3,4,5,6,7\n" op "\n.endr\n"
#define SLEEP "mov $35, %%eax\n lea %2, %%rdi\n xor %%esi, %%esi\n syscall\n"

static void hold_once(struct held *h)
{
	if (avx512)
		__asm__ volatile(EACH32("vmovdqu64 \\i*64(%0), %%zmm\\i") EACH8("kmovq \\i*8(%1), %%k\\i")
				 SLEEP
				 EACH32("vmovdqu64 %%zmm\\i, \\i*64(%0)") EACH8("kmovq %%k\\i, \\i*8(%1)")
				 :
				 : "r"(h->zmm), "r"(h->k), "m"(nap)
				 : "rax", "rdi", "rsi", "rcx", "r11", "memory");
	else
		__asm__ volatile(EACH16("vmovdqu \\i*64(%0), %%ymm\\i")
				 SLEEP
				 EACH16("vmovdqu %%ymm\\i, \\i*64(%0)")
				 :
				 : "r"(h->zmm), "r"(h->k), "m"(nap)
				 : "rax", "rdi", "rsi", "rcx", "r11", "memory");
}

static void *run(void *arg)
{
	int t = (int)(intptr_t)arg;
	struct held *h = &state[t];
	int nregs = avx512 ? 32 : 16, lanes = avx512 ? 8 : 4;
	printf("thread %d tid %ld\n", t, (long)gettid());
	fflush(stdout);
	for (unsigned tick = 1;; tick++) {
		hold_once(h);
		int changed = 0;
		flockfile(stdout);
		for (int i = 0; i < nregs; i++)
			for (int j = 0; j < lanes; j++)
				if (h->zmm[i][j] != want_zmm(t, i, j)) {
					printf("diff %d %s%d lane %d 0x%016llx\n", t, avx512 ? "zmm" : "ymm", i, j,
					       (unsigned long long)h->zmm[i][j]);
					changed = 1;
				}
		for (int i = 0; avx512 && i < 8; i++)
			if (h->k[i] != want_k(t, i)) {
				printf("diff %d k%d lane 0 0x%016llx\n", t, i, (unsigned long long)h->k[i]);
				changed = 1;
			}
		printf("tick %d %u %s\n", t, tick, changed ? "changed" : "ok");
		fflush(stdout);
		funlockfile(stdout);
	}
	return NULL;
}

int main(void)
{
	__builtin_cpu_init();
	avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
	for (int t = 1; t <= NTHREADS; t++) {
		for (int i = 0; i < 32; i++)
			for (int j = 0; j < 8; j++)
				state[t].zmm[i][j] = want_zmm(t, i, j);
		for (int i = 0; i < 8; i++)
			state[t].k[i] = want_k(t, i);
	}
	printf("ready %s threads %d\n", avx512 ? "avx512" : "avx", NTHREADS);
	fflush(stdout);
	for (int t = 2; t <= NTHREADS; t++) {
		pthread_t p;
		if (pthread_create(&p, NULL, run, (void *)(intptr_t)t) != 0) {
			printf("pthread_create failed\n");
			return 1;
		}
	}
	run((void *)(intptr_t)1);
	return 0;
}
