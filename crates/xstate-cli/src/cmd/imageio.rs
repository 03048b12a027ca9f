//! What `validate`, `convert` and `inspect` share: reading and writing images in a file format,
//! and the restoring context's defaults from this host.
//!
//! The format handling is the two functions [`load`] and [`store`]: a record format adds a
//! variant to [`ImageFormat`] and an arm to each.

use std::path::Path;

use xstate::Xfeatures;

use crate::common::{CliError, CliResult, read_file};

/// A file format holding one XSAVE image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// The image bytes and nothing else.
    Raw,
}

/// An image read from a file, with what the file said about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The image.
    pub image: Vec<u8>,
    /// XCR0 (or XCR0 | XSS) the file records for the image, if it records one.
    pub xcr0: Option<Xfeatures>,
}

/// Reads the image in `path` written in `format`.
pub fn load(path: &Path, format: ImageFormat) -> CliResult<Loaded> {
    let bytes = read_file(path)?;
    match format {
        ImageFormat::Raw => Ok(Loaded { image: bytes, xcr0: None }),
    }
}

/// The bytes of a file in `format` holding `image`, restored with `xcr0`.
pub fn store(image: &[u8], _xcr0: Xfeatures, format: ImageFormat) -> CliResult<Vec<u8>> {
    match format {
        ImageFormat::Raw => Ok(image.to_vec()),
    }
}

/// The running CPU's MXCSR mask, from the MXCSR_MASK field of an XSAVE (0 means 0xFFBF); 0xFFFF
/// where the host cannot be asked.
pub fn host_mxcsr_mask() -> u32 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use xstate::component::legacy::MXCSR_MASK;
        let Ok(h) = xstate_hw::Host::probe() else { return 0xFFFF };
        let mut img = vec![0u8; 576];
        img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        let x = h.xcr0();
        match h.xrstor_then_save(&img, x, xstate_hw::SaveInstr::Xsave, x, 0) {
            Ok(out) => {
                match out.get(MXCSR_MASK..MXCSR_MASK + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) {
                    Some(0) => 0xFFBF,
                    Some(m) => m,
                    None => 0xFFFF,
                }
            }
            Err(_) => 0xFFFF,
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    0xFFFF
}

/// Refuses an image shorter than the legacy region and header (exit 1).
pub fn need_header<'a>(image: &'a [u8], path: &Path) -> CliResult<xstate::image::Image<'a>> {
    xstate::image::Image::new(image).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))
}

/// Writes `text` to stdout; a closed or failing stdout is an I/O error (exit 2), not a panic.
pub fn emit(text: &str) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| CliError::usage(format!("stdout: {e}")))
}
