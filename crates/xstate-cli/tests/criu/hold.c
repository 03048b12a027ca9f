/* Holds a known vector state across sleeps, for the CRIU round trip (tests/cli_criu.rs).
 *
 * zmm i lane j (64-bit, i = 0..31, j = 0..7) = 0x5a00000000000000 | i << 8 | j, and k i =
 * 0xc0de000000000000 | 0x11 * (i + 1), where the CPU has AVX-512F and BW; else ymm 0..15
 * (lanes 0..3). One asm block loads the registers, sleeps in nanosleep (a checkpoint freezes
 * the process there) and stores them, so no compiled code runs between load and store.
 * After each sleep it prints "tick N ok", or "diff REG lane J 0xVALUE" for every lane that
 * differs from the known state and then "tick N changed"; it then keeps what it saw. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static uint64_t regs[32][8] __attribute__((aligned(64)));
static uint64_t kregs[8];
static const struct { long s, ns; } nap = { 0, 200000000 };

#define ZMM(op)                                                                                   \
	".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n" \
	op "\n.endr\n"
#define YMM(op) ".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n" op "\n.endr\n"
#define KREG(op) ".irp i,0,1,2,3,4,5,6,7\n" op "\n.endr\n"

static void nap_avx512(void)
{
	__asm__ volatile(ZMM("vmovdqu64 \\i*64(%0), %%zmm\\i") KREG("kmovq \\i*8(%1), %%k\\i")
			 "mov $35, %%eax\n lea %2, %%rdi\n xor %%esi, %%esi\n syscall\n"
			 ZMM("vmovdqu64 %%zmm\\i, \\i*64(%0)") KREG("kmovq %%k\\i, \\i*8(%1)")
			 :
			 : "r"(regs), "r"(kregs), "m"(nap)
			 : "rax", "rdi", "rsi", "rcx", "r11", "memory");
}

static void nap_avx(void)
{
	__asm__ volatile(YMM("vmovdqu \\i*64(%0), %%ymm\\i")
			 "mov $35, %%eax\n lea %1, %%rdi\n xor %%esi, %%esi\n syscall\n"
			 YMM("vmovdqu %%ymm\\i, \\i*64(%0)")
			 :
			 : "r"(regs), "m"(nap)
			 : "rax", "rdi", "rsi", "rcx", "r11", "memory");
}

int main(void)
{
	__builtin_cpu_init();
	int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
	int nregs = avx512 ? 32 : 16, lanes = avx512 ? 8 : 4;
	for (int i = 0; i < 32; i++)
		for (int j = 0; j < 8; j++)
			regs[i][j] = 0x5a00000000000000ull | (uint64_t)i << 8 | (uint64_t)j;
	for (int i = 0; i < 8; i++)
		kregs[i] = 0xc0de000000000000ull | 0x11ull * (i + 1);
	printf("ready %s\n", avx512 ? "avx512" : "avx");
	fflush(stdout);
	for (unsigned tick = 1;; tick++) {
		if (avx512)
			nap_avx512();
		else
			nap_avx();
		int changed = 0;
		for (int i = 0; i < nregs; i++)
			for (int j = 0; j < lanes; j++)
				if (regs[i][j] != (0x5a00000000000000ull | (uint64_t)i << 8 | (uint64_t)j)) {
					printf("diff %s%d lane %d 0x%016llx\n", avx512 ? "zmm" : "ymm", i, j,
					       (unsigned long long)regs[i][j]);
					changed = 1;
				}
		for (int i = 0; avx512 && i < 8; i++)
			if (kregs[i] != (0xc0de000000000000ull | 0x11ull * (i + 1))) {
				printf("diff k%d lane 0 0x%016llx\n", i, (unsigned long long)kregs[i]);
				changed = 1;
			}
		printf("tick %u %s\n", tick, changed ? "changed" : "ok");
		fflush(stdout);
	}
}
