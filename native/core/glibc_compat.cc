// Linux builds link the C++ runtime statically and pass the linker --wrap=<name> for the
// functions below (native/sources.json: linuxLinkFlags, and linuxCudaLinkFlags for the CUDA
// build with its static CUDA runtime), so that a binary built on a new distribution loads on
// one as old as Node 20 supports (glibc 2.28) and needs no particular libstdc++. Each
// __wrap_<name> here is bound to a symbol version that every glibc since the
// architecture's first one exports, instead of the newer one the build machine's glibc
// would give:
// - the pthread, semaphore, shared-memory and dl* functions, which moved from libpthread,
//   librt and libdl into libc in glibc 2.34 and got a new version there (the old one stays
//   exported, and on older glibc those libraries, which Node itself loads, define it): a jump
//   to the old version;
// - fstat and fstat64, functions of their own since glibc 2.33 and before that inlines
//   calling __fxstat and __fxstat64;
// - arc4random (glibc 2.36), which std::random_device can call: getrandom (2.25) instead;
// - __libc_single_threaded (2.32), a flag libstdc++ reads to skip atomic reference counts:
//   a local one that always says "maybe several threads".
// With another C library (musl) each wrapper jumps to the function it wraps.
#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#include <sys/random.h>
#include <sys/stat.h>

#include <cstdint>

#if defined(__x86_64__)
#define LAMINATE_JUMP(target) "jmp " target "@PLT"
#define LAMINATE_GLIBC_BASE "GLIBC_2.2.5"
#define LAMINATE_STAT_VER 1
#else
#define LAMINATE_JUMP(target) "b " target
#define LAMINATE_GLIBC_BASE "GLIBC_2.17"
#define LAMINATE_STAT_VER 0
#endif

// __wrap_<name>: a jump to <name> at glibc version V (or, without glibc, to the real <name>).
#define LAMINATE_TRAMPOLINE(name, target)                                                   \
  __asm__(".pushsection .text\n.globl __wrap_" #name "\n.hidden __wrap_" #name "\n"         \
          ".type __wrap_" #name ", %function\n__wrap_" #name ":\n" LAMINATE_JUMP(target) "\n" \
          ".size __wrap_" #name ", .-__wrap_" #name "\n.popsection\n");
#ifdef __GLIBC__
#define LAMINATE_OLD(name, version)                                           \
  __asm__(".symver laminate_old_" #name ", " #name "@" version);              \
  LAMINATE_TRAMPOLINE(name, "laminate_old_" #name)
#else
#define LAMINATE_OLD(name, version) LAMINATE_TRAMPOLINE(name, "__real_" #name)
#endif
#define LAMINATE_BASE(name) LAMINATE_OLD(name, LAMINATE_GLIBC_BASE)

// what the C++ runtime and the engine's threads call
LAMINATE_BASE(pthread_create)
LAMINATE_BASE(pthread_join)
LAMINATE_BASE(pthread_detach)
LAMINATE_BASE(pthread_once)
LAMINATE_BASE(pthread_key_create)
LAMINATE_BASE(pthread_key_delete)
LAMINATE_BASE(pthread_getspecific)
LAMINATE_BASE(pthread_setspecific)
// libstdc++ takes the presence of this (weak) symbol to mean that threads may run
LAMINATE_OLD(__pthread_key_create, LAMINATE_GLIBC_BASE)

#if defined(LAMINATE_WITH_CUDA) && !defined(LAMINATE_CUDA_SIM) && defined(__GLIBC__)
// what the static CUDA runtime calls
LAMINATE_BASE(dlclose)
LAMINATE_BASE(dlerror)
LAMINATE_BASE(dlopen)
LAMINATE_BASE(dlsym)
LAMINATE_BASE(dlvsym)
#if defined(__x86_64__)
LAMINATE_OLD(dlmopen, "GLIBC_2.3.4")
#else
LAMINATE_BASE(dlmopen)
#endif
LAMINATE_BASE(pthread_condattr_setpshared)
LAMINATE_BASE(pthread_kill)
LAMINATE_BASE(pthread_mutex_trylock)
LAMINATE_BASE(pthread_mutexattr_destroy)
LAMINATE_BASE(pthread_mutexattr_init)
LAMINATE_BASE(pthread_mutexattr_setpshared)
LAMINATE_BASE(pthread_mutexattr_settype)
LAMINATE_BASE(pthread_rwlock_destroy)
LAMINATE_BASE(pthread_rwlock_init)
LAMINATE_BASE(pthread_rwlock_rdlock)
LAMINATE_BASE(pthread_rwlock_timedrdlock)
LAMINATE_BASE(pthread_rwlock_timedwrlock)
LAMINATE_BASE(pthread_rwlock_tryrdlock)
LAMINATE_BASE(pthread_rwlock_trywrlock)
LAMINATE_BASE(pthread_rwlock_unlock)
LAMINATE_BASE(pthread_rwlock_wrlock)
LAMINATE_BASE(pthread_rwlockattr_destroy)
LAMINATE_BASE(pthread_rwlockattr_init)
LAMINATE_BASE(pthread_rwlockattr_setpshared)
LAMINATE_BASE(pthread_spin_destroy)
LAMINATE_BASE(pthread_spin_init)
LAMINATE_BASE(pthread_spin_lock)
LAMINATE_BASE(pthread_spin_trylock)
LAMINATE_BASE(pthread_spin_unlock)
LAMINATE_BASE(sem_destroy)
LAMINATE_BASE(sem_init)
LAMINATE_BASE(sem_post)
LAMINATE_BASE(sem_timedwait)
LAMINATE_BASE(sem_trywait)
LAMINATE_BASE(sem_wait)
LAMINATE_BASE(shm_open)
LAMINATE_BASE(shm_unlink)
#endif

extern "C" {

#define LAMINATE_HIDDEN __attribute__((visibility("hidden")))

#ifdef __GLIBC__
LAMINATE_HIDDEN char __libc_single_threaded = 0;

int laminate_old_fxstat(int, int, struct stat*);
int laminate_old_fxstat64(int, int, struct stat64*);
__asm__(".symver laminate_old_fxstat, __fxstat@" LAMINATE_GLIBC_BASE);
__asm__(".symver laminate_old_fxstat64, __fxstat64@" LAMINATE_GLIBC_BASE);
LAMINATE_HIDDEN int __wrap_fstat(int fd, struct stat* st) { return laminate_old_fxstat(LAMINATE_STAT_VER, fd, st); }
LAMINATE_HIDDEN int __wrap_fstat64(int fd, struct stat64* st) { return laminate_old_fxstat64(LAMINATE_STAT_VER, fd, st); }
#else
int __real_fstat(int, struct stat*);
LAMINATE_HIDDEN int __wrap_fstat(int fd, struct stat* st) { return __real_fstat(fd, st); }
#endif

LAMINATE_HIDDEN uint32_t __wrap_arc4random(void) {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
  }
  return v;
}

}  // extern "C"
#endif
