//! rps-plot: plot helpers for the stages that draw (preprocess's samples, evaluate's
//! charts and grids): an embedded font (Ubuntu Light, from `epaint_default_fonts`), so text
//! renders on machines without system fonts; every string drawn passes through
//! [`drawable`], which shows a character the font lacks as `?` rather than a
//! missing-glyph box; PNG output written atomically.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, Once, OnceLock};

use ab_glyph::{Font, FontRef};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use rps_core::atomic;
use rps_core::error::{Error, Result};

/// The family name plots use.
pub const FONT: &str = "sans-serif";

/// The embedded font's bytes.
const FONT_DATA: &[u8] = epaint_default_fonts::UBUNTU_LIGHT;

/// Registers the embedded font once per process.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_DATA)
            .map_err(|_| "invalid font")
            .expect("the embedded font parses");
    });
}

/// The characters of `text` the embedded font has no glyph for.
pub fn missing_glyphs(text: &str) -> Vec<char> {
    static PARSED: OnceLock<FontRef<'static>> = OnceLock::new();
    let font = PARSED
        .get_or_init(|| FontRef::try_from_slice(FONT_DATA).expect("the embedded font parses"));
    text.chars()
        .filter(|&c| !c.is_control() && font.glyph_id(c).0 == 0)
        .collect()
}

/// Every string the plots of this process drew, for a test to check their glyphs.
static DRAWN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `text` as a plot draws it: recorded (see [`drawn`]), each character the embedded
/// font lacks shown as `?`.
pub fn drawable(text: &str) -> String {
    DRAWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(text.to_string());
    let missing = missing_glyphs(text);
    text.chars()
        .map(|c| if missing.contains(&c) { '?' } else { c })
        .collect()
}

/// Every string [`drawable`] has seen in this process.
pub fn drawn() -> Vec<String> {
    let drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner());
    drawn.iter().cloned().collect()
}

/// A text style of the embedded font at `size` pixels, anchored at `(h, v)`.
pub fn text_style(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(h, v))
}

/// Draws into a `width` x `height` RGB canvas with `draw`, then writes it as PNG.
pub fn render_png<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<()>
where
    F: FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>,
{
    register_font();
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        draw(root.clone()).map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    let image = RgbImage::from_raw(width, height, buffer).expect("buffer size");
    write_png(path, &image)
}

/// Writes an RGB image as PNG, atomically.
pub fn write_png(path: &Path, image: &RgbImage) -> Result<()> {
    atomic::write_file(path, |out| {
        image
            .write_to(out, image::ImageFormat::Png)
            .map_err(|e| plot_error(path, e))
    })
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        message: format!("drawing: {e}"),
    }
}

/// Draws `picture` scaled to `size` x `size` with its top left corner at `(x, y)`.
pub fn draw_picture<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    picture: &RgbImage,
    (x, y): (i32, i32),
    size: u32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let scaled =
        image::imageops::resize(picture, size, size, image::imageops::FilterType::Triangle);
    for (px, py, p) in scaled.enumerate_pixels() {
        area.draw_pixel((x + px as i32, y + py as i32), &RGBColor(p[0], p[1], p[2]))?;
    }
    Ok(())
}

/// A picture in a grid, with lines of caption under it.
pub struct Tile {
    pub picture: RgbImage,
    pub caption: Vec<String>,
}

const TITLE_HEIGHT: u32 = 36;
const CAPTION_LINE: u32 = 19;

/// Tiles captioned pictures in a grid (`cols` wide), each scaled to `cell` pixels
/// square, under an optional title: the recipe's sample figure, the evaluation's
/// error grid, a photo with its prediction.
pub fn image_grid(
    path: &Path,
    title: Option<&str>,
    tiles: &[Tile],
    cols: usize,
    cell: u32,
) -> Result<()> {
    let cols = cols.max(1).min(tiles.len().max(1));
    let rows = tiles.len().div_ceil(cols).max(1);
    let lines = tiles.iter().map(|t| t.caption.len()).max().unwrap_or(0) as u32;
    let tile_h = cell + 6 + lines * CAPTION_LINE;
    let title_h = if title.is_some() { TITLE_HEIGHT } else { 0 };
    let (w, h) = (cols as u32 * cell, title_h + rows as u32 * tile_h);
    render_png(path, w, h, |root| {
        if let Some(title) = title {
            let style = text_style(20, HPos::Center, VPos::Center);
            let at = ((w / 2) as i32, (TITLE_HEIGHT / 2) as i32);
            root.draw_text(&drawable(title), &style, at)?;
        }
        for (i, tile) in tiles.iter().enumerate() {
            let x = (i % cols) as u32 * cell;
            let y = title_h + (i / cols) as u32 * tile_h;
            draw_picture(&root, &tile.picture, (x as i32 + 2, y as i32 + 2), cell - 4)?;
            let style = text_style(15, HPos::Center, VPos::Top);
            for (line, text) in tile.caption.iter().enumerate() {
                let at = (x + cell / 2, y + cell + 2 + line as u32 * CAPTION_LINE);
                root.draw_text(&drawable(text), &style, (at.0 as i32, at.1 as i32))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_the_expected_size_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let red = RgbImage::from_pixel(10, 10, image::Rgb([255, 0, 0]));
        let tiles: Vec<_> = (0..5)
            .map(|i| Tile {
                picture: red.clone(),
                caption: vec![format!("rock {i}"), "p 0.9".into()],
            })
            .collect();
        image_grid(&path, Some("Samples"), &tiles, 5, 100).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(
            img.dimensions(),
            (500, TITLE_HEIGHT + 100 + 6 + 2 * CAPTION_LINE)
        );
        // Title and caption text left dark pixels; the picture is red.
        let dark_rows = |from: u32, to: u32| {
            (0..500)
                .flat_map(|x| (from..to).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y)[1] < 128 && img.get_pixel(x, y)[0] < 128)
                .count()
        };
        assert!(dark_rows(0, TITLE_HEIGHT) > 20, "no title drawn");
        assert!(
            dark_rows(TITLE_HEIGHT + 100, img.height()) > 40,
            "no captions drawn"
        );
        assert_eq!(
            img.get_pixel(50, TITLE_HEIGHT + 50),
            &image::Rgb([255, 0, 0])
        );
    }

    #[test]
    fn a_character_without_a_glyph_is_drawn_as_a_question_mark() {
        assert_eq!(missing_glyphs("rock → paper"), ['→']);
        assert!(missing_glyphs("rock, predicted paper: p 0.87").is_empty());
        assert_eq!(drawable("a → b"), "a ? b");
        assert!(drawn().contains(&"a → b".to_string()));
    }

    #[test]
    fn every_imagenet_class_name_has_its_glyphs() {
        for name in rps_core::imagenet::class_names() {
            let missing = missing_glyphs(&name);
            assert!(missing.is_empty(), "{name}: no glyph for {missing:?}");
        }
    }
}
