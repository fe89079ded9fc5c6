//! The institution's logo on a report card: a PNG or JPEG file (`exports.logo`), decoded once
//! and placed on each card at a fixed height.

use std::path::Path;

use printpdf::{Op, Pt, RawImage, XObjectTransform};

use super::pdf::Writer;

/// A decoded logo. Bigger files are refused: a logo is a few hundred pixels wide.
pub struct Logo {
    image: RawImage,
}

/// The largest logo file read.
pub const MAX_LOGO_BYTES: u64 = 2 * 1024 * 1024;

impl Logo {
    /// Reads and decodes `path`; the error names the file and what is wrong with it.
    pub fn read(path: &Path) -> Result<Logo, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("logo {} unreadable: {e}", path.display()))?
            .len();
        if size > MAX_LOGO_BYTES {
            return Err(format!(
                "logo {} is {size} bytes, more than {MAX_LOGO_BYTES}",
                path.display()
            ));
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("logo {} unreadable: {e}", path.display()))?;
        let image = RawImage::decode_from_bytes(&bytes, &mut Vec::new())
            .map_err(|e| format!("logo {} is not a PNG or JPEG image: {e}", path.display()))?;
        if image.width == 0 || image.height == 0 {
            return Err(format!("logo {} has no pixels", path.display()));
        }
        Ok(Logo { image })
    }

    /// Draws the logo `height` points high with its lower left corner at (x, y); returns its
    /// width in points.
    pub(super) fn draw(&self, w: &mut Writer<'_>, x: f32, y: f32, height: f32) -> f32 {
        let id = w.doc().add_image(&self.image);
        // At 72 dpi a pixel is a point: scale the image's own size to the height wanted.
        let scale = height / self.image.height as f32;
        w.ops().push(Op::UseXobject {
            id,
            transform: XObjectTransform {
                translate_x: Some(Pt(x)),
                translate_y: Some(Pt(y)),
                scale_x: Some(scale),
                scale_y: Some(scale),
                dpi: Some(72.0),
                ..XObjectTransform::default()
            },
        });
        self.image.width as f32 * scale
    }
}
