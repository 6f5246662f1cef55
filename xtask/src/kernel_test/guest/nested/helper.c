/* nested-helper: the two things busybox cannot do for `cargo xtask nested-test`, built
 * static by the harness (gcc -static) and carried by both guests.
 *
 *   nested-helper fbforce /dev/fbN   FBIOPUT_VSCREENINFO with FB_ACTIVATE_FORCE: DRM's fbdev
 *                                    emulation modesets only the fb fbcon took (L2)
 *   nested-helper qmp SOCKET JSON... one QMP session on SOCKET: qmp_capabilities, then each
 *                                    JSON command; prints every reply line, exits 1 on an
 *                                    "error" reply or a dead socket (L1, on vm-cli's socket)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fbforce(const char *dev) {
	int fd = open(dev, O_RDWR);
	struct fb_var_screeninfo v;
	if (fd < 0 || ioctl(fd, FBIOGET_VSCREENINFO, &v)) {
		printf("fbforce %s: %s\n", dev, strerror(errno));
		return 1;
	}
	v.activate = FB_ACTIVATE_NOW | FB_ACTIVATE_FORCE;
	if (ioctl(fd, FBIOPUT_VSCREENINFO, &v)) {
		printf("fbforce %s: FBIOPUT_VSCREENINFO: %s\n", dev, strerror(errno));
		return 1;
	}
	printf("fbforce %s: %ux%u bpp %u\n", dev, v.xres, v.yres, v.bits_per_pixel);
	close(fd);
	return 0;
}

/* Reads one line (up to '\n') into buf; 0 at EOF. */
static int read_line(int fd, char *buf, size_t cap) {
	size_t n = 0;
	while (n + 1 < cap) {
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r <= 0)
			return 0;
		if (c == '\n')
			break;
		buf[n++] = c;
	}
	buf[n] = 0;
	return 1;
}

/* Sends cmd and prints lines until a "return" or "error" reply (events are printed too). */
static int exchange(int fd, const char *cmd) {
	static char line[1 << 16];
	if (write(fd, cmd, strlen(cmd)) < 0 || write(fd, "\n", 1) < 0) {
		printf("qmp: write: %s\n", strerror(errno));
		return 1;
	}
	for (;;) {
		if (!read_line(fd, line, sizeof line)) {
			printf("qmp: the socket closed before a reply to %s\n", cmd);
			return 1;
		}
		printf("qmp: %s\n", line);
		if (strstr(line, "\"error\""))
			return 1;
		if (strstr(line, "\"return\""))
			return 0;
	}
}

static int qmp(const char *path, char **cmds, int n) {
	static char line[1 << 16];
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strncpy(a.sun_path, path, sizeof a.sun_path - 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
		printf("qmp: connect %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (!read_line(fd, line, sizeof line)) {
		printf("qmp: no greeting on %s\n", path);
		return 1;
	}
	if (exchange(fd, "{\"execute\":\"qmp_capabilities\"}"))
		return 1;
	for (int i = 0; i < n; i++)
		if (exchange(fd, cmds[i]))
			return 1;
	close(fd);
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "fbforce"))
		return fbforce(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "qmp"))
		return qmp(argv[2], argv + 3, argc - 3);
	fprintf(stderr, "usage: nested-helper fbforce /dev/fbN | qmp SOCKET JSON...\n");
	return 2;
}
