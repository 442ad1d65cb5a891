//! Plot helpers: an embedded font (Ubuntu Light, from `epaint_default_fonts`), so text
//! renders on machines without system fonts, and PNG output written atomically.

use std::path::Path;
use std::sync::Once;

use image::RgbImage;
use plotters::prelude::*;

use crate::atomic;
use crate::error::{Error, Result};

/// The family name plots use.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font once per process.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| "invalid font")
            .expect("the embedded font parses");
    });
}

/// Draws into a `width` x `height` RGB canvas with `draw`, then writes it as PNG.
pub fn render_png<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<()>
where
    F: FnOnce(
        DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>,
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

/// Tiles titled pictures in a grid (`cols` wide), each scaled to `cell` pixels
/// square: the recipe's sample figure and the evaluation's error grid.
pub fn image_grid(path: &Path, tiles: &[(RgbImage, String)], cols: usize, cell: u32) -> Result<()> {
    let cols = cols.max(1).min(tiles.len().max(1));
    let rows = tiles.len().div_ceil(cols).max(1);
    let title_h = 24;
    let (w, h) = (cols as u32 * cell, rows as u32 * (cell + title_h));
    render_png(path, w, h, |root| {
        for (i, (picture, title)) in tiles.iter().enumerate() {
            let (x, y) = (
                (i % cols) as u32 * cell,
                (i / cols) as u32 * (cell + title_h),
            );
            let scaled = image::imageops::resize(
                picture,
                cell - 4,
                cell - 4,
                image::imageops::FilterType::Triangle,
            );
            for (px, py, p) in scaled.enumerate_pixels() {
                root.draw_pixel(
                    ((x + 2 + px) as i32, (y + title_h + py) as i32),
                    &RGBColor(p[0], p[1], p[2]),
                )?;
            }
            let style = TextStyle::from((FONT, 15).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ),
            );
            root.draw_text(
                title,
                &style,
                ((x + cell / 2) as i32, (y + title_h / 2) as i32),
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_the_expected_size_and_text() {
        let (_dir, path) = crate::testing::temp_path("grid.png");
        let red = RgbImage::from_pixel(10, 10, image::Rgb([255, 0, 0]));
        let tiles: Vec<_> = (0..5).map(|i| (red.clone(), format!("rock {i}"))).collect();
        image_grid(&path, &tiles, 5, 100).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (500, 124));
        // Title text left dark pixels in the title band; the picture is red.
        let dark = (0..500)
            .flat_map(|x| (0..24).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 128)
            .count();
        assert!(dark > 20, "no text drawn");
        assert_eq!(img.get_pixel(50, 70), &image::Rgb([255, 0, 0]));
    }
}
