/* AVIF encoding for ross through libavif (Debian's libavif-dev, with libaom as the encoder).
 *
 * A shim rather than Rust declarations of libavif's structs: it is compiled against the
 * installed avif.h, so the structs' layout is always the library's own. It takes 8-bit RGB or
 * RGBA rows and returns the encoded file, or libavif's error text. */

#include <avif/avif.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Encodes `height` rows of `width` pixels, `stride` bytes apart, `channels` (3 or 4) bytes per
 * pixel, with libaom (`codec` 0) or rav1e (`codec` 1, for the benchmark's comparison).
 * `quantizer` 0 (lossless) to 63 (worst); `speed` 0 (slowest) to 10 (fastest). On
 * success returns 0 and sets `*out` / `*out_len` (free with ross_avif_free). On failure returns
 * a non-zero libavif result and leaves a message in `error` (NUL-terminated, `error_len` bytes
 * at most). */
int ross_avif_encode(const uint8_t *pixels, uint32_t width, uint32_t height, uint32_t stride,
                     uint32_t channels, int codec, int quantizer, int speed, int threads, uint8_t **out,
                     size_t *out_len, char *error, size_t error_len) {
    avifResult result = AVIF_RESULT_UNKNOWN_ERROR;
    avifEncoder *encoder = NULL;
    avifRWData output = AVIF_DATA_EMPTY;
    avifImage *image = avifImageCreate(width, height, 8, AVIF_PIXEL_FORMAT_YUV420);
    if (image == NULL) {
        result = AVIF_RESULT_OUT_OF_MEMORY;
        goto done;
    }
    /* Full range, BT.601 matrix: what JPEG uses, so colours match the JPEG render. */
    image->yuvRange = AVIF_RANGE_FULL;
    image->matrixCoefficients = AVIF_MATRIX_COEFFICIENTS_BT601;
    image->colorPrimaries = AVIF_COLOR_PRIMARIES_BT709;
    image->transferCharacteristics = AVIF_TRANSFER_CHARACTERISTICS_SRGB;

    avifRGBImage rgb;
    avifRGBImageSetDefaults(&rgb, image);
    rgb.depth = 8;
    rgb.format = channels == 4 ? AVIF_RGB_FORMAT_RGBA : AVIF_RGB_FORMAT_RGB;
    rgb.pixels = (uint8_t *)pixels;
    rgb.rowBytes = stride;
    result = avifImageRGBToYUV(image, &rgb);
    if (result != AVIF_RESULT_OK) {
        goto done;
    }

    encoder = avifEncoderCreate();
    if (encoder == NULL) {
        result = AVIF_RESULT_OUT_OF_MEMORY;
        goto done;
    }
    encoder->codecChoice = codec == 1 ? AVIF_CODEC_CHOICE_RAV1E : AVIF_CODEC_CHOICE_AOM;
    encoder->maxThreads = threads;
    encoder->speed = speed;
    encoder->minQuantizer = quantizer;
    encoder->maxQuantizer = quantizer;
    /* Alpha edges show banding sooner than colour: kept finer. */
    encoder->minQuantizerAlpha = quantizer / 2;
    encoder->maxQuantizerAlpha = quantizer / 2;
    result = avifEncoderWrite(encoder, image, &output);
    if (result != AVIF_RESULT_OK) {
        goto done;
    }
    *out = output.data;
    *out_len = output.size;
    output.data = NULL;

done:
    if (result != AVIF_RESULT_OK && error_len > 0) {
        const char *text = avifResultToString(result);
        if (encoder != NULL && encoder->diag.error[0] != '\0') {
            text = encoder->diag.error;
        }
        strncpy(error, text, error_len - 1);
        error[error_len - 1] = '\0';
    }
    if (encoder != NULL) {
        avifEncoderDestroy(encoder);
    }
    if (image != NULL) {
        avifImageDestroy(image);
    }
    return (int)result;
}

/* Frees what ross_avif_encode returned. */
void ross_avif_free(uint8_t *data, size_t len) {
    avifRWData output = {data, len};
    avifRWDataFree(&output);
}

/* Decodes an AVIF file to 8-bit RGBA rows, `*width * 4` bytes each (free with
 * ross_avif_free_pixels). Returns 0, or a libavif result with a message in `error`. For the
 * tests and benchmarks, which compare renders; ross does not read AVIF sources. */
int ross_avif_decode(const uint8_t *data, size_t len, uint8_t **pixels, uint32_t *width,
                     uint32_t *height, char *error, size_t error_len) {
    avifResult result = AVIF_RESULT_UNKNOWN_ERROR;
    avifRGBImage rgb;
    memset(&rgb, 0, sizeof(rgb));
    avifDecoder *decoder = avifDecoderCreate();
    avifImage *image = avifImageCreateEmpty();
    if (decoder == NULL || image == NULL) {
        result = AVIF_RESULT_OUT_OF_MEMORY;
        goto done;
    }
    result = avifDecoderReadMemory(decoder, image, data, len);
    if (result != AVIF_RESULT_OK) {
        goto done;
    }
    avifRGBImageSetDefaults(&rgb, image);
    rgb.depth = 8;
    rgb.format = AVIF_RGB_FORMAT_RGBA;
    avifRGBImageAllocatePixels(&rgb);
    result = avifImageYUVToRGB(image, &rgb);
    if (result != AVIF_RESULT_OK) {
        avifRGBImageFreePixels(&rgb);
        goto done;
    }
    /* Rows back to back, whatever libavif's row length. */
    size_t row = (size_t)rgb.width * 4;
    uint8_t *packed = malloc(row * rgb.height);
    if (packed == NULL) {
        avifRGBImageFreePixels(&rgb);
        result = AVIF_RESULT_OUT_OF_MEMORY;
        goto done;
    }
    for (uint32_t y = 0; y < rgb.height; y++) {
        memcpy(packed + y * row, rgb.pixels + (size_t)y * rgb.rowBytes, row);
    }
    *pixels = packed;
    *width = rgb.width;
    *height = rgb.height;
    avifRGBImageFreePixels(&rgb);

done:
    if (result != AVIF_RESULT_OK && error_len > 0) {
        const char *text = avifResultToString(result);
        if (decoder != NULL && decoder->diag.error[0] != '\0') {
            text = decoder->diag.error;
        }
        strncpy(error, text, error_len - 1);
        error[error_len - 1] = '\0';
    }
    if (image != NULL) {
        avifImageDestroy(image);
    }
    if (decoder != NULL) {
        avifDecoderDestroy(decoder);
    }
    return (int)result;
}

/* Frees what ross_avif_decode returned. */
void ross_avif_free_pixels(uint8_t *pixels) { free(pixels); }
