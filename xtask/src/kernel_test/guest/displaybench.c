/*
 * displaybench: the guest side of `cargo xtask bench-display` (xtask/src/kernel_test/
 * bench_display.rs). Built on the host with `gcc -static -O2` into the bench initramfs.
 *
 *   displaybench SECS
 *
 * Takes the CRTC from fbcon with a KMS dumb buffer of the current mode, then
 *   1. for SECS seconds: fills the whole buffer with a new colour and sends
 *      DRM_IOCTL_MODE_DIRTYFB for the whole frame (full-frame updates);
 *   2. for SECS seconds: DIRTYFB of the whole, unchanged frame only (the device path:
 *      TRANSFER_TO_HOST_2D + RESOURCE_FLUSH per update).
 * Each phase ends with a host sync: virtio-gpu does not fence dumb-buffer updates, so a small
 * resource is created with DRM_IOCTL_VIRTGPU_RESOURCE_CREATE (fenced) and waited for; the
 * control queue is processed in order, so every earlier update has then been consumed. The
 * rate is updates / (time including that sync). Prints one line for the host:
 *   BENCH full=<updates/s> dirty=<updates/s> mode=<w>x<h> full_n=<n> dirty_n=<n>
 * or `BENCH fail <what>` when something is missing.
 *
 * No libdrm: the uapi structures are declared here from include/uapi/drm/drm.h,
 * drm_mode.h and virtgpu_drm.h (Linux 6.1).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct modeinfo {
	uint32_t clock;
	uint16_t hdisplay, hsync_start, hsync_end, htotal, hskew;
	uint16_t vdisplay, vsync_start, vsync_end, vtotal, vscan;
	uint32_t vrefresh, flags, type;
	char name[32];
};

struct card_res {
	uint64_t fb_id_ptr, crtc_id_ptr, connector_id_ptr, encoder_id_ptr;
	uint32_t count_fbs, count_crtcs, count_connectors, count_encoders;
	uint32_t min_width, max_width, min_height, max_height;
};

struct crtc {
	uint64_t set_connectors_ptr;
	uint32_t count_connectors, crtc_id, fb_id, x, y, gamma_size, mode_valid;
	struct modeinfo mode;
};

struct create_dumb {
	uint32_t height, width, bpp, flags, handle, pitch;
	uint64_t size;
};

struct map_dumb {
	uint32_t handle, pad;
	uint64_t offset;
};

struct fb_cmd {
	uint32_t fb_id, width, height, pitch, bpp, depth, handle;
};

struct clip_rect {
	uint16_t x1, y1, x2, y2;
};

struct fb_dirty_cmd {
	uint32_t fb_id, flags, color, num_clips;
	uint64_t clips_ptr;
};

struct gem_close {
	uint32_t handle, pad;
};

struct virtgpu_resource_create {
	uint32_t target, format, bind, width, height, depth, array_size, last_level;
	uint32_t nr_samples, flags, bo_handle, res_handle, size, stride;
};

struct virtgpu_wait {
	uint32_t handle, flags;
};

#define DRM_BASE 'd'
#define IOCTL_GEM_CLOSE _IOW(DRM_BASE, 0x09, struct gem_close)
#define IOCTL_GETRESOURCES _IOWR(DRM_BASE, 0xA0, struct card_res)
#define IOCTL_GETCRTC _IOWR(DRM_BASE, 0xA1, struct crtc)
#define IOCTL_SETCRTC _IOWR(DRM_BASE, 0xA2, struct crtc)
#define IOCTL_ADDFB _IOWR(DRM_BASE, 0xAE, struct fb_cmd)
#define IOCTL_DIRTYFB _IOWR(DRM_BASE, 0xB1, struct fb_dirty_cmd)
#define IOCTL_CREATE_DUMB _IOWR(DRM_BASE, 0xB2, struct create_dumb)
#define IOCTL_MAP_DUMB _IOWR(DRM_BASE, 0xB3, struct map_dumb)
#define IOCTL_VIRTGPU_RESOURCE_CREATE \
	_IOWR(DRM_BASE, 0x40 + 0x04, struct virtgpu_resource_create)
#define IOCTL_VIRTGPU_WAIT _IOWR(DRM_BASE, 0x40 + 0x08, struct virtgpu_wait)

static void fail(const char *what)
{
	printf("BENCH fail %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;
	do {
		r = ioctl(fd, req, arg);
	} while (r == -1 && (errno == EINTR || errno == EAGAIN));
	return r;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits until the host has consumed every command queued so far (see the header). */
static void host_sync(int fd)
{
	struct virtgpu_resource_create rc;
	struct virtgpu_wait w;
	struct gem_close gc;

	memset(&rc, 0, sizeof(rc));
	rc.target = 2; /* PIPE_TEXTURE_2D, the only target 2D accepts */
	rc.format = 2; /* VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM */
	rc.bind = 2; /* VIRGL_BIND_RENDER_TARGET */
	rc.width = 64;
	rc.height = 64;
	rc.depth = 1;
	rc.array_size = 1;
	if (xioctl(fd, IOCTL_VIRTGPU_RESOURCE_CREATE, &rc))
		fail("VIRTGPU_RESOURCE_CREATE (sync)");
	memset(&w, 0, sizeof(w));
	w.handle = rc.bo_handle;
	if (xioctl(fd, IOCTL_VIRTGPU_WAIT, &w))
		fail("VIRTGPU_WAIT (sync)");
	memset(&gc, 0, sizeof(gc));
	gc.handle = rc.bo_handle;
	xioctl(fd, IOCTL_GEM_CLOSE, &gc);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 5.0;
	int fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fail("open /dev/dri/card0");

	struct card_res res;
	memset(&res, 0, sizeof(res));
	if (xioctl(fd, IOCTL_GETRESOURCES, &res))
		fail("GETRESOURCES");
	if (res.count_crtcs < 1 || res.count_connectors < 1) {
		errno = ENODEV;
		fail("no CRTC or connector");
	}
	uint32_t crtcs[16], conns[16], fbs[16], encs[16];
	if (res.count_crtcs > 16 || res.count_connectors > 16 || res.count_fbs > 16 ||
	    res.count_encoders > 16) {
		errno = E2BIG;
		fail("more than 16 KMS objects");
	}
	res.crtc_id_ptr = (uintptr_t)crtcs;
	res.connector_id_ptr = (uintptr_t)conns;
	res.fb_id_ptr = (uintptr_t)fbs;
	res.encoder_id_ptr = (uintptr_t)encs;
	if (xioctl(fd, IOCTL_GETRESOURCES, &res))
		fail("GETRESOURCES (ids)");

	struct crtc cur;
	memset(&cur, 0, sizeof(cur));
	cur.crtc_id = crtcs[0];
	if (xioctl(fd, IOCTL_GETCRTC, &cur))
		fail("GETCRTC");
	if (!cur.mode_valid) {
		errno = ENOENT;
		fail("CRTC 0 has no mode (is fbcon up?)");
	}
	uint32_t w = cur.mode.hdisplay, h = cur.mode.vdisplay;

	struct create_dumb cd;
	memset(&cd, 0, sizeof(cd));
	cd.width = w;
	cd.height = h;
	cd.bpp = 32;
	if (xioctl(fd, IOCTL_CREATE_DUMB, &cd))
		fail("CREATE_DUMB");
	struct fb_cmd fb;
	memset(&fb, 0, sizeof(fb));
	fb.width = w;
	fb.height = h;
	fb.pitch = cd.pitch;
	fb.bpp = 32;
	fb.depth = 24;
	fb.handle = cd.handle;
	if (xioctl(fd, IOCTL_ADDFB, &fb))
		fail("ADDFB");
	struct map_dumb md;
	memset(&md, 0, sizeof(md));
	md.handle = cd.handle;
	if (xioctl(fd, IOCTL_MAP_DUMB, &md))
		fail("MAP_DUMB");
	uint8_t *px = mmap(NULL, cd.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, md.offset);
	if (px == MAP_FAILED)
		fail("mmap dumb buffer");

	struct crtc set;
	memset(&set, 0, sizeof(set));
	set.crtc_id = crtcs[0];
	set.fb_id = fb.fb_id;
	set.set_connectors_ptr = (uintptr_t)&conns[0];
	set.count_connectors = 1;
	set.mode_valid = 1;
	set.mode = cur.mode;
	if (xioctl(fd, IOCTL_SETCRTC, &set))
		fail("SETCRTC");

	struct clip_rect clip = { 0, 0, (uint16_t)w, (uint16_t)h };
	struct fb_dirty_cmd dirty;
	memset(&dirty, 0, sizeof(dirty));
	dirty.fb_id = fb.fb_id;
	dirty.num_clips = 1;
	dirty.clips_ptr = (uintptr_t)&clip;

	/* Phase 1: a new colour in every pixel, then DIRTYFB. */
	long full_n = 0;
	double t0 = now();
	while (now() - t0 < secs) {
		uint32_t colour = 0x00010203u * (uint32_t)(full_n + 1);
		for (uint32_t y = 0; y < h; y++) {
			uint32_t *row = (uint32_t *)(px + (size_t)y * cd.pitch);
			for (uint32_t x = 0; x < w; x++)
				row[x] = colour;
		}
		if (xioctl(fd, IOCTL_DIRTYFB, &dirty))
			fail("DIRTYFB (full)");
		full_n++;
	}
	host_sync(fd);
	double full_t = now() - t0;

	/* Phase 2: the same frame again and again: the device path alone. */
	long dirty_n = 0;
	t0 = now();
	while (now() - t0 < secs) {
		if (xioctl(fd, IOCTL_DIRTYFB, &dirty))
			fail("DIRTYFB (unchanged)");
		dirty_n++;
	}
	host_sync(fd);
	double dirty_t = now() - t0;

	printf("BENCH full=%.1f dirty=%.1f mode=%ux%u full_n=%ld dirty_n=%ld\n", full_n / full_t,
	       dirty_n / dirty_t, w, h, full_n, dirty_n);
	fflush(stdout);
	return 0;
}
