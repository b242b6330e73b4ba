/* syncrate - how many fdatasync() calls per second one thread gets on the
 * disk holding DIR: overwrite a 4 KiB block of a preallocated file, then
 * fdatasync, in a loop for SECONDS (default 2). Prints
 * "syncs=N secs=S syncs_per_s=R" on stdout. Used by tests/bench/bench.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK	4096
#define NBLOCKS 256 /* the file: 1 MiB, written and synced once up front */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "syncrate: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: syncrate DIR [SECONDS]\n");
		return 2;
	}
	double secs = argc == 3 ? atof(argv[2]) : 2.0;
	if (secs <= 0 || secs > 600) {
		fprintf(stderr, "syncrate: SECONDS must be in (0, 600]\n");
		return 2;
	}
	char path[4096];
	if (snprintf(path, sizeof path, "%s/.syncrate.XXXXXX", argv[1]) >=
	    (int)sizeof path) {
		fprintf(stderr, "syncrate: path too long\n");
		return 2;
	}
	int fd = mkstemp(path);
	if (fd < 0)
		die("cannot create a file in", argv[1]);
	unlink(path); /* gone at exit whatever happens; the inode stays open */

	static char block[BLOCK];
	for (int i = 0; i < NBLOCKS; i++)
		if (pwrite(fd, block, BLOCK, (off_t)i * BLOCK) != BLOCK)
			die("write", path);
	if (fsync(fd) != 0)
		die("fsync", path);

	long n = 0;
	double t0 = now(), t;
	do {
		memset(block, (int)(n & 0xff),
		       16); /* the data really changes */
		if (pwrite(fd, block, BLOCK, (off_t)(n % NBLOCKS) * BLOCK) !=
		    BLOCK)
			die("write", path);
		if (fdatasync(fd) != 0)
			die("fdatasync", path);
		n++;
		t = now() - t0;
	} while (t < secs);
	close(fd);
	printf("syncs=%ld secs=%.3f syncs_per_s=%.1f\n", n, t, (double)n / t);
	return 0;
}
