//! The test transform against Pillow's (fixtures made by
//! scripts/make_image_fixtures.py), and augmentation determinism.

use std::path::{Path, PathBuf};

use rps_image::{self as transform, Augmentation};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Largest per-value difference from Pillow's output, in 1/255 steps.
fn max_diff_from_pillow(image: &str) -> u8 {
    let ours = transform::test_view(&transform::load_rgb(&fixture(image)).unwrap(), 16);
    let stem = image.rsplit_once('.').unwrap().0;
    let want = rps_core::npy::read::<u8>(&fixture(&format!("{stem}_expected.npy"))).unwrap();
    assert_eq!(want.shape(), &[16, 16, 3]);
    ours.as_raw()
        .iter()
        .zip(want.iter())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap()
}

#[test]
fn png_resize_matches_pillow_within_1_of_255() {
    for image in ["rgba.png", "palette.png", "gray16.png", "large.png"] {
        let diff = max_diff_from_pillow(image);
        eprintln!("{image}: largest difference from Pillow {diff}/255");
        assert!(diff <= 1, "{image}: differs from Pillow by {diff}/255");
    }
}

#[test]
fn jpeg_resize_is_close_to_pillow() {
    // JPEG decoders differ slightly (zune-jpeg here, libjpeg in Pillow).
    let diff = max_diff_from_pillow("photo.jpg");
    eprintln!("photo.jpg: largest difference from Pillow {diff}/255");
    assert!(diff <= 2, "photo.jpg: differs from Pillow by {diff}/255");
}

#[test]
fn the_same_image_seed_and_view_give_the_same_pixels() {
    let image = transform::load_rgb(&fixture("large.png")).unwrap();
    let view = |seed, view| {
        let mut rng = transform::view_rng(seed, "train/rock/a.png", view);
        Augmentation::draw(&mut rng, image.width(), image.height()).apply(&image, 32)
    };
    assert_eq!(view(0, 1), view(0, 1));
    assert_ne!(view(0, 1), view(0, 2));
    assert_ne!(view(0, 1), view(1, 1));
}

#[test]
fn non_images_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty.png", &b""[..]),
        ("text.png", b"hello"),
        (
            "cut.png",
            &std::fs::read(fixture("rgba.png")).unwrap()[..200],
        ),
        (
            "cut.jpg",
            &std::fs::read(fixture("photo.jpg")).unwrap()[..300],
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", transform::load_rgb(&path).unwrap_err());
        assert!(err.contains(name), "{err}");
        // One line, the decoder's message once.
        let message = err.rsplit(": ").next().unwrap();
        assert!(
            !err.contains('\n') && err.matches(message).count() == 1,
            "{err:?}"
        );
    }
}
