//! Isolation fixture: the mode `escape` tries, from 100 px wide, four things a plugin must not
//! be able to do inside its worker, and fills the output's four vertical quarters, left to
//! right, white where the attempt succeeded and black where it failed: create and write
//! `/tmp/ross-escaped`, open a TCP socket, run `/bin/true`, read `/etc/passwd`.

#[path = "support/misbehaving.rs"]
mod support;

fn escape(target: plugin_api::TargetSize) -> Result<plugin_api::ImageBuf, plugin_api::RenderError> {
    let attempts = [
        std::fs::write("/tmp/ross-escaped", b"a plugin wrote this").is_ok(),
        std::net::TcpListener::bind("127.0.0.1:0").is_ok(),
        std::process::Command::new("/bin/true")
            .status()
            .is_ok_and(|s| s.success()),
        std::fs::read("/etc/passwd").is_ok(),
    ];
    let (w, h) = (target.width, target.height);
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for _ in 0..h {
        for x in 0..w {
            let band = ((x * 4) / w).min(3) as usize;
            pixels.extend_from_slice(&[if attempts[band] { 255 } else { 0 }; 3]);
        }
    }
    plugin_api::ImageBuf::from_vec(pixels, w, h, plugin_api::PixelFormat::Rgb8)
}

misbehaving_mode!(
    Escape,
    "escape",
    "Tries to leave its sandbox from 100 px wide.",
    escape
);
