/* xstate's QEMU test guest: a multiboot (v1) kernel for `qemu-system-x86_64 -kernel`.
 *
 * 32-bit entry: SSE on, XSAVE on with XCR0 = CPUID.(0xD,0).EAX & (x87|SSE|AVX|AVX-512|PKRU|AMX),
 * less each group whose CPUID.7 feature flag is clear; identity-mapped long mode; then CPL 3
 * (IOPL 3, so COM1 is reachable), where it loads the known state of ../shared/fixtures/README.md
 * (zmm i lane j = 0x5a00000000000000 | i << 8 | j, k i = 0xc011 * .. , MXCSR 0x9fc0,
 * fld1/fldpi/fldl2e, PKRU 0x5555aaa4, tiles: tmm t byte b = t * 16 + (b & 15) with 16 rows of
 * 64 bytes), prints "READY xcr0=XXXXXXXX cpuid7.ebx=XXXXXXXX" on COM1, and then forever prints
 * "xmm1=<lane 0>" whenever xmm1's low 64 bits change: after an incoming migration that patched
 * xmm1, the guest itself reports the value it runs with.
 *
 * MPX: where CPUID.(7,0).EBX[14] is set and CPUID.(0xD,0).EAX has both BNDREGS and BNDCSR (bits
 * 3, 4), XCR0 has them too, and at CPL 3 one XRSTOR (RFBM 0x18) of a standard-format area
 * (XSTATE_BV 0x18; offsets from CPUID.(0xD,3).EBX and (0xD,4).EBX at run time) loads:
 *   bnd i (i = 0..3): lb = 0x1000 * (i + 1), architectural ub = 0x2000 * (i + 1), which the
 *                     XSAVE image holds in 1's complement: ~(0x2000 * (i + 1));
 *   BNDCFGU = 0x200003 (bound directory base 0x200000, BNDPRESERVE = 1, EN = 1), BNDSTATUS = 0.
 * (At CPL 3 only XRSTOR writes BNDCFGU, and MPX instructions are NOPs while BNDCFGU.EN = 0.
 * BNDPRESERVE must be set: with EN = 1 and BNDPRESERVE = 0, every branch without the BND prefix
 * (this guest's calls and jumps) resets bnd0-3 to init; TCG does so.)
 * Its print loop then also XSAVEs (RFBM 0x18) and prints "bnd1=<lb>" (16 hex digits, the image's
 * bytes 0-7 of bnd1) whenever bnd1's lower bound changes. */
	.set MB_MAGIC, 0x1BADB002
	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC, 0, -MB_MAGIC

	.text
	.code32
	.globl _start
_start:
	cli
	mov $stack_top, %esp
	mov $1, %eax; cpuid; mov %ecx, cpuid1_ecx
	mov $7, %eax; xor %ecx, %ecx; cpuid; mov %ebx, cpuid7_ebx; mov %ecx, cpuid7_ecx; mov %edx, cpuid7_edx
	/* CR0: MP on, EM and TS off; CR4: OSFXSR | OSXMMEXCPT */
	mov %cr0, %eax; and $~0xc, %eax; or $2, %eax; mov %eax, %cr0
	mov %cr4, %eax; or $0x600, %eax; mov %eax, %cr4
	testl $(1 << 26), cpuid1_ecx; jz no_xsave
	mov %cr4, %eax; or $(1 << 18), %eax; mov %eax, %cr4      /* OSXSAVE */
	mov $0xd, %eax; xor %ecx, %ecx; cpuid
	and $0x602ff, %eax
	mov %eax, %ecx; and $0x18, %ecx; cmp $0x18, %ecx; jne 2f /* BNDREGS and BNDCSR, both or neither */
	testl $(1 << 14), cpuid7_ebx; jnz 1f                    /* MPX */
2:	and $~0x18, %eax
1:	testl $(1 << 16), cpuid7_ebx; jnz 1f                    /* AVX512F */
	and $~0xe0, %eax
1:	testl $(1 << 3), cpuid7_ecx; jnz 1f                     /* PKU */
	and $~0x200, %eax
1:	testl $(1 << 24), cpuid7_edx; jnz 1f                    /* AMX-TILE */
	and $~0x60000, %eax
1:	mov %eax, xcr0_value
	xor %edx, %edx; xor %ecx, %ecx; xsetbv
	testl $0x18, xcr0_value; jz 1f
	call mpx_area_fill
1:	testl $0x200, xcr0_value; jz no_xsave
	mov %cr4, %eax; or $(1 << 22), %eax; mov %eax, %cr4     /* PKE */
no_xsave:
	/* Page tables: 0-4 MiB identity, 2 MiB pages, user accessible. */
	mov $pdpt, %eax; or $7, %eax; mov %eax, pml4
	mov $pd, %eax; or $7, %eax; mov %eax, pdpt
	movl $0x87, pd; movl $0x200087, pd + 8
	mov $pml4, %eax; mov %eax, %cr3
	mov %cr4, %eax; or $(1 << 5), %eax; mov %eax, %cr4      /* PAE */
	mov $0xc0000080, %ecx; rdmsr; or $(1 << 8), %eax; wrmsr /* EFER.LME */
	mov %cr0, %eax; or $0x80000001, %eax; mov %eax, %cr0    /* PG | PE */
	lgdt gdt_ptr
	ljmp $0x08, $kernel64

/* mpx_area_fill: the XRSTOR area of the known MPX state; the component offsets from CPUID.
 * Where an offset does not fit the area, MPX is left off (XCR0 bits 3, 4 cleared again). */
mpx_area_fill:
	mov $0xd, %eax; mov $3, %ecx; cpuid
	cmp $(4096 - 64), %ebx; ja 9f
	mov %ebx, bndregs_off
	mov $0xd, %eax; mov $4, %ecx; cpuid
	cmp $(4096 - 64), %ebx; ja 9f
	mov %ebx, bndcsr_off
	mov $bnd_values, %esi; mov $mpx_area, %edi; add bndregs_off, %edi; mov $64, %ecx; rep movsb
	mov $bndcsr_values, %esi; mov $mpx_area, %edi; add bndcsr_off, %edi; mov $16, %ecx; rep movsb
	movl $0x18, mpx_area + 512                              /* XSTATE_BV; XCOMP_BV 0: standard */
	ret
9:	andl $~0x18, xcr0_value
	mov xcr0_value, %eax; xor %edx, %edx; xor %ecx, %ecx; xsetbv
	ret

	.code64
kernel64:
	mov $0x10, %ax; mov %ax, %ds; mov %ax, %es; mov %ax, %ss
	/* iretq to CPL 3 with IOPL 3: SS, RSP, RFLAGS, CS, RIP */
	lea user_stack_top(%rip), %rax
	pushq $0x1b; push %rax; pushq $0x3002; pushq $0x23
	lea user(%rip), %rax; push %rax
	iretq

user:
	testl $0x200, xcr0_value(%rip); jz 1f
	mov $0x5555aaa4, %eax; xor %ecx, %ecx; xor %edx, %edx; wrpkru
1:	testl $0xe0, xcr0_value(%rip); jz 2f
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	vmovdqu64 vectors + \i * 64(%rip), %zmm\i
	.endr
	.irp i, 0,1,2,3,4,5,6,7
	kmovw masks + \i * 2(%rip), %k\i
	.endr
	jmp 4f
2:	testl $0x4, xcr0_value(%rip); jz 3f
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu vectors + \i * 64(%rip), %ymm\i
	.endr
	jmp 4f
3:	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu vectors + \i * 64(%rip), %xmm\i
	.endr
4:	testl $0x60000, xcr0_value(%rip); jz 5f
	ldtilecfg tile_config(%rip)
	lea tile_data(%rip), %rsi; mov $64, %rdi
	.irp t, 0,1,2,3,4,5,6,7
	tileloadd (%rsi,%rdi,1), %tmm\t
	add $1024, %rsi
	.endr
5:	testl $0x18, xcr0_value(%rip); jz 6f
	mov $0x18, %eax; xor %edx, %edx; xrstor mpx_area(%rip)
6:	ldmxcsr mxcsr_value(%rip)
	fninit; fld1; fldpi; fldl2e
	lea msg_ready(%rip), %rsi; call puts
	mov xcr0_value(%rip), %eax; mov $8, %ecx; call puthex
	lea msg_cpuid7(%rip), %rsi; call puts
	mov cpuid7_ebx(%rip), %eax; mov $8, %ecx; call puthex
	lea msg_nl(%rip), %rsi; call puts
	xor %r15, %r15
	xor %r14, %r14
watch:
	pause
	movq %xmm1, %rax
	cmp %rax, %r15
	je 1f
	mov %rax, %r15
	lea msg_xmm1(%rip), %rsi; call puts
	mov %r15, %rax; mov $16, %ecx; call puthex
	lea msg_nl(%rip), %rsi; call puts
1:	testl $0x18, xcr0_value(%rip); jz watch
	mov $0x18, %eax; xor %edx, %edx; xsave mpx_save(%rip)
	mov bndregs_off(%rip), %eax; lea mpx_save(%rip), %rdx
	mov 16(%rdx,%rax,1), %rax                               /* bnd1.lb */
	cmp %rax, %r14
	je watch
	mov %rax, %r14
	lea msg_bnd1(%rip), %rsi; call puts
	mov %r14, %rax; mov $16, %ecx; call puthex
	lea msg_nl(%rip), %rsi; call puts
	jmp watch

/* puts: the NUL-terminated string at %rsi to COM1. Clobbers %rax, %rdx, %rsi. */
puts:	mov $0x3f8, %dx
1:	lodsb; test %al, %al; jz 2f; out %al, %dx; jmp 1b
2:	ret
/* puthex: the low %ecx nibbles of %rax, most significant first. Clobbers %rax, %rbx, %rcx, %rdx. */
puthex:	mov %rax, %rbx; mov $0x3f8, %dx
	mov %ecx, %eax; shl $2, %eax; mov %eax, %ecx; neg %ecx; add $64, %ecx; shl %cl, %rbx
	mov %eax, %ecx; shr $2, %ecx
1:	rol $4, %rbx; mov %ebx, %eax; and $15, %eax
	lea hex_digits(%rip), %rdx; mov (%rdx,%rax,1), %al; mov $0x3f8, %dx; out %al, %dx
	loop 1b
	ret

	.data
	.align 64
vectors:
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.irp j, 0,1,2,3,4,5,6,7
	.quad 0x5a00000000000000 | (\i << 8) | \j
	.endr
	.endr
masks:	.short 0xc011, 0xc022, 0xc033, 0xc044, 0xc055, 0xc066, 0xc077, 0xc088
	.align 64
tile_config:
	.byte 1, 0
	.fill 14, 1, 0
	.fill 8, 2, 64          /* colsb of tiles 0-7: 64 bytes */
	.fill 8, 2, 0
	.fill 8, 1, 16          /* rows of tiles 0-7: 16 */
	.fill 8, 1, 0
	.align 64
tile_data:
	.irp t, 0,1,2,3,4,5,6,7
	.rept 64
	.byte \t * 16 + 0, \t * 16 + 1, \t * 16 + 2, \t * 16 + 3, \t * 16 + 4, \t * 16 + 5, \t * 16 + 6, \t * 16 + 7
	.byte \t * 16 + 8, \t * 16 + 9, \t * 16 + 10, \t * 16 + 11, \t * 16 + 12, \t * 16 + 13, \t * 16 + 14, \t * 16 + 15
	.endr
	.endr
bnd_values:
	.irp i, 1,2,3,4
	.quad 0x1000 * \i, ~(0x2000 * \i)
	.endr
bndcsr_values:
	.quad 0x200003, 0
	.align 8
gdt:	.quad 0
	.quad 0x00af9a000000ffff    /* 0x08 kernel code 64 */
	.quad 0x00cf92000000ffff    /* 0x10 kernel data */
	.quad 0x00cff2000000ffff    /* 0x18 user data */
	.quad 0x00affa000000ffff    /* 0x20 user code 64 */
gdt_ptr: .short 39
	.long gdt
cpuid1_ecx: .long 0
cpuid7_ebx: .long 0
cpuid7_ecx: .long 0
cpuid7_edx: .long 0
xcr0_value: .long 0
bndregs_off: .long 0
bndcsr_off: .long 0
mxcsr_value: .long 0x9fc0
hex_digits: .ascii "0123456789abcdef"
msg_ready: .asciz "READY xcr0="
msg_xmm1: .asciz "xmm1="
msg_bnd1: .asciz "bnd1="
msg_cpuid7: .asciz " cpuid7.ebx="
msg_nl:	.asciz "\n"

	.bss
	.align 4096
pml4:	.space 4096
pdpt:	.space 4096
pd:	.space 4096
	.space 8192
stack_top:
	.space 8192
user_stack_top:
	.align 64
mpx_area:	.space 4096
mpx_save:	.space 4096
