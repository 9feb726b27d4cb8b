// Linux builds link the C++ runtime statically (binding.gyp: -static-libstdc++ with
// --wrap for the functions below), so that a binary built on a new distribution loads on
// one as old as Node 20 supports (glibc 2.28) and needs no particular libstdc++. What the
// build machine's glibc would otherwise bind to versions newer than 2.28 is bound here to
// the versions every glibc since the architecture's first one exports:
// - the pthread functions, which moved from libpthread into libc in glibc 2.34 and got a
//   new version there (the old one stays exported, and on older glibc libpthread, which
//   Node itself loads, defines it);
// - fstat and fstat64, functions of their own since glibc 2.33 and before that inlines
//   calling __fxstat and __fxstat64;
// - arc4random (glibc 2.36), which std::random_device can call: getrandom (2.25) instead;
// - __libc_single_threaded (2.32), a flag libstdc++ reads to skip atomic reference counts:
//   a local one that always says "maybe several threads".
// Elsewhere (musl) each wrapper calls the function it wraps.
#if defined(__linux__)
#include <pthread.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <cstdint>

#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
#define LAMINATE_OLD_GLIBC 1
#if defined(__x86_64__)
#define LAMINATE_GLIBC_BASE "GLIBC_2.2.5"
#define LAMINATE_STAT_VER 1
#else
#define LAMINATE_GLIBC_BASE "GLIBC_2.17"
#define LAMINATE_STAT_VER 0
#endif
#endif

extern "C" {

#ifdef LAMINATE_OLD_GLIBC
// Each old_<name> is a reference to <name> at the base version.
#define LAMINATE_OLD(ret, name, params) \
  ret old_##name params;                \
  __asm__(".symver old_" #name "," #name "@" LAMINATE_GLIBC_BASE);
LAMINATE_OLD(int, pthread_create, (pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))
LAMINATE_OLD(int, pthread_join, (pthread_t, void**))
LAMINATE_OLD(int, pthread_detach, (pthread_t))
LAMINATE_OLD(int, pthread_once, (pthread_once_t*, void (*)(void)))
LAMINATE_OLD(int, pthread_key_create, (pthread_key_t*, void (*)(void*)))
LAMINATE_OLD(int, __pthread_key_create, (pthread_key_t*, void (*)(void*)))
LAMINATE_OLD(int, pthread_key_delete, (pthread_key_t))
LAMINATE_OLD(void*, pthread_getspecific, (pthread_key_t))
LAMINATE_OLD(int, pthread_setspecific, (pthread_key_t, const void*))
LAMINATE_OLD(int, __fxstat, (int, int, struct stat*))
LAMINATE_OLD(int, __fxstat64, (int, int, struct stat64*))
#undef LAMINATE_OLD
#define LAMINATE_CALL(name) old_##name

__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
#else
int __real_pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
int __real_pthread_join(pthread_t, void**);
int __real_pthread_detach(pthread_t);
int __real_pthread_once(pthread_once_t*, void (*)(void));
int __real_pthread_key_create(pthread_key_t*, void (*)(void*));
int __real_pthread_key_delete(pthread_key_t);
void* __real_pthread_getspecific(pthread_key_t);
int __real_pthread_setspecific(pthread_key_t, const void*);
int __real_fstat(int, struct stat*);
#define LAMINATE_CALL(name) __real_##name
#endif

#define LAMINATE_HIDDEN __attribute__((visibility("hidden")))

LAMINATE_HIDDEN int __wrap_pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
  return LAMINATE_CALL(pthread_create)(t, a, f, arg);
}
LAMINATE_HIDDEN int __wrap_pthread_join(pthread_t t, void** r) { return LAMINATE_CALL(pthread_join)(t, r); }
LAMINATE_HIDDEN int __wrap_pthread_detach(pthread_t t) { return LAMINATE_CALL(pthread_detach)(t); }
LAMINATE_HIDDEN int __wrap_pthread_once(pthread_once_t* o, void (*f)(void)) { return LAMINATE_CALL(pthread_once)(o, f); }
LAMINATE_HIDDEN int __wrap_pthread_key_create(pthread_key_t* k, void (*d)(void*)) {
  return LAMINATE_CALL(pthread_key_create)(k, d);
}
// libstdc++ takes the presence of this (weak) symbol to mean that threads may run
LAMINATE_HIDDEN int __wrap___pthread_key_create(pthread_key_t* k, void (*d)(void*)) {
  return LAMINATE_CALL(pthread_key_create)(k, d);
}
LAMINATE_HIDDEN int __wrap_pthread_key_delete(pthread_key_t k) { return LAMINATE_CALL(pthread_key_delete)(k); }
LAMINATE_HIDDEN void* __wrap_pthread_getspecific(pthread_key_t k) { return LAMINATE_CALL(pthread_getspecific)(k); }
LAMINATE_HIDDEN int __wrap_pthread_setspecific(pthread_key_t k, const void* v) {
  return LAMINATE_CALL(pthread_setspecific)(k, v);
}

#ifdef LAMINATE_OLD_GLIBC
LAMINATE_HIDDEN int __wrap_fstat(int fd, struct stat* st) { return old___fxstat(LAMINATE_STAT_VER, fd, st); }
LAMINATE_HIDDEN int __wrap_fstat64(int fd, struct stat64* st) { return old___fxstat64(LAMINATE_STAT_VER, fd, st); }
#else
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
