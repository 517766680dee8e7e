// Fiber context switching for the emulator.
//
// x86-64: a 20-instruction switch that saves the SysV callee-saved registers, MXCSR and the x87
// control word on the fiber's stack and swaps stack pointers. ucontext's swapcontext does the same plus
// a sigprocmask system call per switch, several times slower (`pytest tests/emu/test_emu_selftest.py -s`
// prints the cost of a barrier wait with each). Other platforms, or -DFK_EMU_UCONTEXT, use ucontext.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && !defined(FK_EMU_UCONTEXT)
#define FK_EMU_ASM_SWITCH 1
#else
#define FK_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

namespace fk::emu {

#if FK_EMU_ASM_SWITCH

extern "C" void fk_emu_switch_context(void** save_sp, void* load_sp);

// One weak, hidden copy per shared object (COMDAT), however many translation units include this.
asm(R"(
    .pushsection .text.fk_emu_switch_context,"axG",@progbits,fk_emu_switch_context,comdat
    .weak fk_emu_switch_context
    .hidden fk_emu_switch_context
    .type fk_emu_switch_context,@function
fk_emu_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fk_emu_switch_context, .-fk_emu_switch_context
    .popsection
)");

struct Context {
  void* sp = nullptr;
};

inline void switch_context(Context& from, Context& to) { fk_emu_switch_context(&from.sp, to.sp); }

// Prepare `ctx` to start `entry` (which must never return) on [stack, stack + bytes).
inline void start_context(Context& ctx, void* stack, std::size_t bytes, void (*entry)()) {
  auto top = (reinterpret_cast<std::uintptr_t>(stack) + bytes) & ~std::uintptr_t(15);
  auto* sp = reinterpret_cast<std::uint64_t*>(top);
  *--sp = 0;                                         // entry's return address: none (it never returns)
  *--sp = reinterpret_cast<std::uint64_t>(entry);    // popped by `ret`: rsp is then 8 mod 16, as after a call
  for (int i = 0; i < 6; ++i) *--sp = 0;             // rbp rbx r12-r15
  std::uint32_t mxcsr;
  std::uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--sp = static_cast<std::uint64_t>(mxcsr) | (static_cast<std::uint64_t>(fpucw) << 32);
  ctx.sp = sp;
}

#else

struct Context {
  ucontext_t uc;
};

inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

inline void start_context(Context& ctx, void* stack, std::size_t bytes, void (*entry)()) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack;
  ctx.uc.uc_stack.ss_size = bytes;
  ctx.uc.uc_link = nullptr;  // entry never returns
  makecontext(&ctx.uc, entry, 0);
}

#endif

}  // namespace fk::emu
