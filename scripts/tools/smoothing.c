/* Decodes a JPEG at scale N/8 with libjpeg's block smoothing on or off (do_block_smoothing,
 * which the TurboJPEG API does not expose), writes the RGB pixels to stdout and the best decode
 * time of RUNS runs, in ms, to stderr. Used by scripts/measure-block-smoothing.
 * usage: smoothing FILE EIGHTHS SMOOTH(0|1) RUNS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <jpeglib.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
int main(int argc, char **argv) {
  FILE *f = fopen(argv[1], "rb"); fseek(f, 0, SEEK_END); long n = ftell(f); rewind(f);
  unsigned char *buf = malloc(n); fread(buf, 1, n, f); fclose(f);
  int runs = atoi(argv[4]); double best = 1e9; unsigned char *out = NULL; size_t len = 0;
  for (int r = 0; r < runs; r++) {
    struct jpeg_decompress_struct c; struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e); jpeg_create_decompress(&c);
    jpeg_mem_src(&c, buf, n); jpeg_read_header(&c, TRUE);
    c.scale_num = atoi(argv[2]); c.scale_denom = 8; c.do_block_smoothing = atoi(argv[3]);
    c.out_color_space = JCS_RGB;
    double t0 = now(); jpeg_start_decompress(&c);
    size_t stride = c.output_width * 3; len = stride * c.output_height;
    if (!out) out = malloc(len);
    while (c.output_scanline < c.output_height) { JSAMPROW row = out + stride * c.output_scanline; jpeg_read_scanlines(&c, &row, 1); }
    jpeg_finish_decompress(&c); double t = now() - t0; if (t < best) best = t;
    jpeg_destroy_decompress(&c);
  }
  fwrite(out, 1, len, stdout); fprintf(stderr, "%.2f\n", best); return 0;
}
