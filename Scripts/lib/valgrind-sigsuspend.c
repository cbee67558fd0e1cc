// Measurement aid for Scripts/instructions-per-append, preloaded into ringlogd under valgrind.
// Valgrind 3.19 faults reading the signal mask libdispatch passes to sigsuspend; this makes the
// same call with an empty mask on the stack. Nothing in RingLog depends on the mask.
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

int sigsuspend(const sigset_t *mask) {
    (void)mask;
    sigset_t empty;
    sigemptyset(&empty);
    return (int)syscall(SYS_rt_sigsuspend, &empty, 8);
}
