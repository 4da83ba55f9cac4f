/* The generator benchmark's floor: writes a given set of unit files and links into a directory
 * with nothing else around it, as the cheapest generator could. The set comes from a manifest
 * (written by benches/generator.rs from what kapell generated), records of
 *     'U' name '\0' text '\0'    a unit, created with O_CREAT|O_EXCL and one write(2)
 *     'L' path '\0' target '\0'  a symlink
 *     'D' path '\0' '\0'         a directory (the *.wants/ directories)
 * Usage: floor MANIFEST OUT-DIR. Reading the manifest (one read of a few MiB) stands in for the
 * generator reading its input; everything else is one open+write+close or symlink per file. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: floor MANIFEST OUT-DIR\n");
        return 2;
    }
    int in = open(argv[1], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t have = 0;
    while (have < (size_t)st.st_size) {
        ssize_t n = read(in, buf + have, (size_t)st.st_size - have);
        if (n <= 0) {
            perror("read");
            return 1;
        }
        have += (size_t)n;
    }
    close(in);
    mkdir(argv[2], 0755);
    int dir = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) {
        perror(argv[2]);
        return 1;
    }
    char *p = buf, *end = buf + have;
    while (p < end) {
        char kind = *p++;
        char *name = p;
        p += strlen(p) + 1;
        char *text = p;
        size_t len = strlen(p);
        p += len + 1;
        if (kind == 'D') {
            if (mkdirat(dir, name, 0755) != 0) {
                perror(name);
                return 1;
            }
        } else if (kind == 'L') {
            if (symlinkat(text, dir, name) != 0) {
                perror(name);
                return 1;
            }
        } else {
            int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
                perror(name);
                return 1;
            }
            close(fd);
        }
    }
    return 0;
}
