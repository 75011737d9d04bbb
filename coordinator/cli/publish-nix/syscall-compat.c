/* syscall-compat: runs a command with the syscalls newer glibc tries first
 * (clone3, close_range, faccessat2, fchmodat2) answering ENOSYS, so glibc falls
 * back to the old ones. Hosts whose seccomp policy answers them with EPERM
 * instead (the seed's) otherwise break every program of glibc >= 2.34: it falls
 * back only on ENOSYS, so pthread_create fails and Nix dies with "Operation not
 * permitted". A newer filter's ERRNO wins over an older one's, so this works
 * under the host's filter; on a host without one it changes nothing a program
 * notices. Built static by `farm publish-nix`, so it loads nothing itself.
 * usage: syscall-compat CMD [ARG...] */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#define ENOSYS_FOR(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS)

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s CMD [ARG...]\n", argv[0]); return 2; }
  struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    ENOSYS_FOR(435), /* clone3 */
    ENOSYS_FOR(436), /* close_range */
    ENOSYS_FOR(439), /* faccessat2 */
    ENOSYS_FOR(452), /* fchmodat2 */
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };
  /* Where seccomp itself is refused, run the command as it is rather than not at all. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
    perror("syscall-compat: running without the compatibility filter");
  execv(argv[1], argv + 1);
  perror(argv[1]);
  return 127;
}
