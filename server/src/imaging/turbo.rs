//! A decompressor over TurboJPEG 3's C API, for what the `turbojpeg` crate's does not give:
//! the header of a file libjpeg read with a warning (the crate treats every warning as an
//! error, and its `decompress` reads the header again), the kind of each failure (warning or
//! fatal), and the ICC profile libjpeg itself assembled from the APP2 segments (wherever they
//! are before the first scan, in any order).

use std::ffi::CStr;

use turbojpeg::raw;

/// A TurboJPEG call that did not fully succeed.
#[derive(Debug, Clone)]
pub(super) enum Trouble {
    /// libjpeg went on, with this warning (corrupt or non-conforming data it got past).
    Warning(String),
    /// libjpeg stopped.
    Fatal(String),
}

/// The header fields ross uses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) width: u32,
    pub(super) height: u32,
    /// `raw::TJCS_*`.
    pub(super) colorspace: i32,
    pub(super) lossless: bool,
}

/// One TurboJPEG decompression instance.
pub(super) struct Decompressor(raw::tjhandle);

#[allow(unsafe_code)]
impl Decompressor {
    pub(super) fn new() -> Result<Decompressor, String> {
        // SAFETY: a plain constructor; null is checked.
        let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as libc::c_int) };
        if handle.is_null() {
            return Err("TurboJPEG could not start".into());
        }
        let mut this = Decompressor(handle);
        // Keep APP2 (ICC) segments only, for `icc_profile`.
        this.set(raw::TJPARAM_TJPARAM_SAVEMARKERS, 4)
            .map_err(|t| format!("{t:?}"))?;
        Ok(this)
    }

    /// The outcome of the last call that returned `status`.
    fn outcome(&mut self, status: libc::c_int) -> Result<(), Trouble> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: the handle is live; the string is owned by it and copied at once.
        let (code, message) = unsafe {
            (
                raw::tj3GetErrorCode(self.0),
                CStr::from_ptr(raw::tj3GetErrorStr(self.0))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        if code == raw::TJERR_TJERR_WARNING as libc::c_int {
            Err(Trouble::Warning(message))
        } else {
            Err(Trouble::Fatal(message))
        }
    }

    pub(super) fn set(&mut self, param: raw::TJPARAM, value: i32) -> Result<(), Trouble> {
        // SAFETY: the handle is live.
        let status = unsafe { raw::tj3Set(self.0, param as libc::c_int, value) };
        self.outcome(status)
    }

    fn get(&mut self, param: raw::TJPARAM) -> i32 {
        // SAFETY: the handle is live.
        unsafe { raw::tj3Get(self.0, param as libc::c_int) }
    }

    /// Reads the header of `jpeg`. With a warning, the header was read all the same (libjpeg
    /// reads on past what it warns about): the warning is returned beside it.
    pub(super) fn read_header(&mut self, jpeg: &[u8]) -> Result<(Header, Option<String>), String> {
        // SAFETY: libjpeg reads `jpeg` within its length.
        let status = unsafe { raw::tj3DecompressHeader(self.0, jpeg.as_ptr(), jpeg.len() as _) };
        let warning = match self.outcome(status) {
            Ok(()) => None,
            Err(Trouble::Warning(w)) => Some(w),
            Err(Trouble::Fatal(e)) => return Err(e),
        };
        let side = |v: i32| u32::try_from(v).ok().filter(|&v| v > 0);
        let (Some(width), Some(height)) = (
            side(self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH)),
            side(self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT)),
        ) else {
            return Err(warning.unwrap_or_else(|| "no image size in the header".into()));
        };
        Ok((
            Header {
                width,
                height,
                colorspace: self.get(raw::TJPARAM_TJPARAM_COLORSPACE),
                lossless: self.get(raw::TJPARAM_TJPARAM_LOSSLESS) == 1,
            },
            warning,
        ))
    }

    /// The ICC profile the last header read found, if any.
    pub(super) fn icc_profile(&mut self) -> Option<Vec<u8>> {
        let mut buf: *mut libc::c_uchar = std::ptr::null_mut();
        let mut size: raw::size_t = 0;
        // SAFETY: TurboJPEG allocates the copy it returns; it is copied, then freed with
        // tj3Free as its documentation requires.
        unsafe {
            if raw::tj3GetICCProfile(self.0, &mut buf, &mut size) != 0 || buf.is_null() {
                return None;
            }
            let profile = std::slice::from_raw_parts(buf, size as usize).to_vec();
            raw::tj3Free(buf.cast());
            Some(profile)
        }
    }

    /// Sets the scale of the next decompression to `eighths`/8.
    pub(super) fn set_scale(&mut self, eighths: u32) -> Result<(), Trouble> {
        // TurboJPEG knows its factors in lowest terms (1/2, not 4/8).
        let mut denom: u32 = 8;
        let mut num = eighths.max(1);
        while num.is_multiple_of(2) && denom.is_multiple_of(2) {
            num /= 2;
            denom /= 2;
        }
        let factor = raw::tjscalingfactor {
            num: num as libc::c_int,
            denom: denom as libc::c_int,
        };
        // SAFETY: the handle is live.
        let status = unsafe { raw::tj3SetScalingFactor(self.0, factor) };
        self.outcome(status)
    }

    /// Decompresses `jpeg` into `pixels` (`pitch` bytes a row, `format` a `raw::TJPF_*`),
    /// which must hold the scaled image. A warning means the image was decoded past damage.
    pub(super) fn decompress(
        &mut self,
        jpeg: &[u8],
        pixels: &mut [u8],
        pitch: usize,
        rows: usize,
        format: raw::TJPF,
    ) -> Result<(), Trouble> {
        assert!(pixels.len() >= pitch * rows, "the buffer holds the image");
        // SAFETY: libjpeg reads `jpeg` within its length and writes `rows` rows of `pitch`
        // bytes, which `pixels` holds (checked above; the caller sized it for the scale set).
        let status = unsafe {
            raw::tj3Decompress8(
                self.0,
                jpeg.as_ptr(),
                jpeg.len() as _,
                pixels.as_mut_ptr(),
                pitch as libc::c_int,
                format as libc::c_int,
            )
        };
        self.outcome(status)
    }
}

#[allow(unsafe_code)]
impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle is live and not used after this.
        unsafe { raw::tj3Destroy(self.0) }
    }
}
