//! What every PDF of a deployment is drawn with, from `[exports]`: the fonts, and the
//! institution's name, logo and time zone on its report cards. Kept for the life of the
//! process; fonts and logo are read on the first PDF.

use std::path::PathBuf;
use std::sync::OnceLock;

use chrono_tz::Tz;

use super::card::CardStyle;
use super::logo::Logo;
use super::pdf::Fonts;
use crate::config::ExportsConfig;

pub struct PdfAssets {
    fonts: Fonts,
    institution: String,
    timezone: Tz,
    logo_path: Option<PathBuf>,
    logo: OnceLock<Result<Logo, String>>,
}

impl PdfAssets {
    pub fn new(config: &ExportsConfig) -> PdfAssets {
        PdfAssets {
            fonts: Fonts::new(config.fonts.clone()),
            institution: config.institution.clone(),
            timezone: config.timezone,
            logo_path: config.logo.clone(),
            logo: OnceLock::new(),
        }
    }

    pub fn fonts(&self) -> &Fonts {
        &self.fonts
    }

    /// The cards' style, and why the configured logo is left out if it is. Blocking on first
    /// use (it reads the logo).
    pub fn card_style(&self) -> (CardStyle<'_>, Option<String>) {
        let logo = self.logo_path.as_ref().map(|path| {
            self.logo.get_or_init(|| {
                let logo = Logo::read(path);
                if let Err(problem) = &logo {
                    tracing::warn!(%problem, "the configured logo is not used");
                }
                logo
            })
        });
        let (logo, problem) = match logo {
            Some(Ok(logo)) => (Some(logo), None),
            Some(Err(problem)) => (None, Some(problem.clone())),
            None => (None, None),
        };
        let style = CardStyle {
            institution: &self.institution,
            logo,
            timezone: self.timezone,
        };
        (style, problem)
    }
}
