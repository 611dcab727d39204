//! Isolation fixture: the mode `greedy` allocates and touches 8 GiB from 100 px wide, in
//! 256 MiB pieces, as a plugin with a runaway buffer would.

#[path = "support/misbehaving.rs"]
mod support;

fn greedy(target: plugin_api::TargetSize) -> Result<plugin_api::ImageBuf, plugin_api::RenderError> {
    const PIECE: usize = 256 << 20;
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..32 {
        // Touched, not just reserved: every page is written.
        held.push(vec![1u8; PIECE]);
    }
    let touched: usize = held.iter().map(|p| p[PIECE / 2] as usize).sum();
    Ok(plugin_api::ImageBuf::filled(
        target.width,
        target.height,
        plugin_api::PixelFormat::Rgb8,
        &[touched as u8; 3],
    ))
}

misbehaving_mode!(
    Greedy,
    "greedy",
    "Allocates 8 GiB from 100 px wide.",
    greedy
);
