//! The readers on files PyTorch wrote: the genuine EfficientNet-Lite0 weights in
//! torch.save's legacy format (`../shared/reference/`), held to what torch.load reads
//! from them; the fuzz seeds torch wrote in both formats, read alike; and hostile
//! files in the legacy format, refused by the same limits as the zip archive.

use std::path::{Path, PathBuf};

use rps_weights::{Format, MAX_INFLATION, check_whole, load_file, parse};

fn seed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds/pth")
        .join(name)
}

fn lite0() -> PathBuf {
    rps_fixtures::reference("efficientnet-lite0-57934424.pth")
}

#[test]
fn the_genuine_lite0_file_reads_as_torch_load_reads_it() {
    let path = lite0();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(Format::of(&bytes), Format::Legacy);
    let (tensors, sha256) = load_file(&path).unwrap();
    assert_eq!(
        sha256,
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    );
    // scripts/make_weights_reference.py: torch.load's view of the same file.
    let text = std::fs::read(rps_fixtures::arch_reference(
        "efficientnet_lite0_tensors.json",
    ))
    .unwrap();
    let want: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let want = want["tensors"].as_object().unwrap();
    let keys: Vec<&String> = tensors.keys().collect();
    let mut want_keys: Vec<&String> = want.keys().collect();
    want_keys.sort();
    assert_eq!(keys, want_keys);
    assert_eq!(
        tensors.len(),
        247,
        "float tensors (49 int64 counters left out)"
    );
    let elements: usize = tensors.values().map(|t| t.len()).sum();
    assert_eq!(elements, 4_694_024);
    for (key, tensor) in &tensors {
        let expected = &want[key];
        let shape: Vec<usize> = serde_json::from_value(expected["shape"].clone()).unwrap();
        assert_eq!(tensor.shape(), shape.as_slice(), "{key}");
        let flat: Vec<f32> = tensor.iter().copied().collect();
        for probe in expected["probes"].as_array().unwrap() {
            let at = probe[0].as_u64().unwrap() as usize;
            // The exact float32, as JSON prints it in decimal.
            assert_eq!(flat[at], probe[1].as_f64().unwrap() as f32, "{key}[{at}]");
        }
        let sum: f64 = flat.iter().map(|&v| v as f64).sum();
        let abs_sum: f64 = flat.iter().map(|&v| (v as f64).abs()).sum();
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-9 * want.abs().max(1.0);
        assert!(close(sum, expected["sum"].as_f64().unwrap()), "{key} sum");
        assert!(
            close(abs_sum, expected["abs_sum"].as_f64().unwrap()),
            "{key} abs_sum"
        );
    }
    check_whole(&path).unwrap();
}

#[test]
fn a_cut_legacy_file_is_not_whole_and_not_read() {
    let bytes = std::fs::read(lite0()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // In the pickles, in the storage keys' list, in a storage's count, in its data,
    // and one byte short of the end.
    for keep in [100, 30_000, 45_000, 47_180, 5_000_000, bytes.len() - 1] {
        let cut = dir.path().join("cut.pth");
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let err = check_whole(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.pth is not a complete legacy torch.save file"),
            "{keep}: {err}"
        );
        assert!(parse(&bytes[..keep], &cut).is_err(), "{keep}");
    }
    let mut longer = bytes.clone();
    longer.extend(b"tail");
    let err = parse(&longer, Path::new("w.pth")).unwrap_err().to_string();
    assert!(
        err.contains("w.pth") && err.contains("4 bytes follow the last storage"),
        "{err}"
    );
}

#[test]
fn both_torch_save_formats_read_alike() {
    for name in ["small", "resnet18_w1"] {
        let (zip, _) = load_file(&seed(&format!("{name}.pth"))).unwrap();
        let (legacy, _) = load_file(&seed(&format!("{name}_legacy.pth"))).unwrap();
        assert!(!zip.is_empty());
        assert_eq!(zip, legacy, "{name}");
        check_whole(&seed(&format!("{name}_legacy.pth"))).unwrap();
    }
    // The small one holds a transposed view and an offset into a shared storage.
    let (small, _) = load_file(&seed("small_legacy.pth")).unwrap();
    let t: Vec<f32> = small["t"].iter().copied().collect();
    assert_eq!(t, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let view: Vec<f32> = small["view"].iter().copied().collect();
    assert_eq!(view, [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
}

#[test]
fn no_prefix_of_a_legacy_file_panics_or_reads() {
    let bytes = std::fs::read(seed("small_legacy.pth")).unwrap();
    for keep in 0..bytes.len() {
        assert!(parse(&bytes[..keep], Path::new("w.pth")).is_err(), "{keep}");
    }
}

/// A pickled state dict of `tensors` float tensors, each all of the one storage
/// "0" of `storage_len` values.
fn views_of_one_storage(tensors: usize, storage_len: u16) -> Vec<u8> {
    let mut pickle = b"\x80\x02}".to_vec();
    let n = storage_len.to_le_bytes();
    for i in 0..tensors {
        let key = format!("k{i}");
        pickle.extend([0x8c, key.len() as u8]);
        pickle.extend(key.as_bytes());
        pickle.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pickle.extend(b"(\x8c\x07storagectorch\nFloatStorage\n\x8c\x010\x8c\x03cpu");
        pickle.extend([b'M', n[0], n[1], b't', b'Q', b'K', 0]);
        pickle.extend([b'M', n[0], n[1], 0x85, b'K', 1, 0x85, b't', b'R', b's']);
    }
    pickle.push(b'.');
    pickle
}

/// `pickle` and its storage "0" of `storage_len` zeros in a zip archive.
fn in_archive(pickle: &[u8], storage_len: usize, compression: zip::CompressionMethod) -> Vec<u8> {
    let mut zipped = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut zipped);
    let options = zip::write::SimpleFileOptions::default().compression_method(compression);
    writer.start_file("w/data.pkl", options).unwrap();
    std::io::Write::write_all(&mut writer, pickle).unwrap();
    writer.start_file("w/data/0", options).unwrap();
    std::io::Write::write_all(&mut writer, &vec![0u8; 4 * storage_len]).unwrap();
    writer.finish().unwrap();
    zipped.into_inner()
}

/// `pickle` and its storage "0" of `storage_len` zeros in the legacy format:
/// `count` is the element count written before the storage.
fn in_legacy(pickle: &[u8], storage_len: usize, count: u64) -> Vec<u8> {
    let mut bytes = rps_weights::legacy::MAGIC.to_vec();
    bytes.extend(b"\x80\x02M\xe9\x03."); // 1001
    bytes.extend(b"\x80\x02}(\x8c\x0dlittle_endian\x88u.");
    bytes.extend(pickle);
    bytes.extend(b"\x80\x02](\x8c\x010e.");
    bytes.extend(count.to_le_bytes());
    bytes.extend(vec![0u8; 4 * storage_len]);
    bytes
}

fn refusal(bytes: &[u8]) -> String {
    parse(bytes, Path::new("w.pth")).unwrap_err().to_string()
}

#[test]
fn many_views_of_one_storage_are_bounded_in_both_formats() {
    for container in [
        |p: &[u8]| in_archive(p, 4096, zip::CompressionMethod::Stored),
        |p: &[u8]| in_legacy(p, 4096, 4096),
    ] {
        let two = container(&views_of_one_storage(2, 4096));
        assert_eq!(parse(&two, Path::new("w.pth")).unwrap().len(), 2);
        let many = container(&views_of_one_storage(100, 4096));
        let err = refusal(&many);
        assert!(
            err.contains("tensors of more than") && err.contains("limit"),
            "{err}"
        );
    }
}

#[test]
fn an_entry_larger_than_its_limit_is_refused() {
    let bytes = in_archive(&[b'.'; 1 << 20], 0, zip::CompressionMethod::Deflated);
    assert!((bytes.len() as u64) * MAX_INFLATION < 1 << 20);
    let err = refusal(&bytes);
    assert!(err.contains("w/data.pkl") && err.contains("limit"), "{err}");
}

#[test]
fn a_legacy_file_whose_storages_disagree_with_its_tensors_is_refused() {
    let pickle = views_of_one_storage(1, 8);
    let good = in_legacy(&pickle, 8, 8);
    assert_eq!(parse(&good, Path::new("w.pth")).unwrap()["k0"].len(), 8);
    let err = refusal(&in_legacy(&pickle, 8, 9));
    assert!(err.contains("holds 9 elements, its tensors say 8"), "{err}");
    let err = refusal(&in_legacy(&pickle, 7, 8));
    assert!(err.contains("cut short"), "{err}");
    let mut unviewed = good.clone();
    let list = b"\x80\x02](\x8c\x010e.";
    let at = unviewed
        .windows(list.len())
        .position(|w| w == list)
        .unwrap();
    unviewed.splice(
        at..at + list.len(),
        b"\x80\x02](\x8c\x010\x8c\x011e.".iter().copied(),
    );
    assert!(refusal(&unviewed).contains("storage \"1\" is viewed by no tensor"));
    let mut big = good.clone();
    let flag = big.iter().position(|&b| b == 0x88).unwrap();
    big[flag] = 0x89;
    assert!(refusal(&big).contains("big-endian"));
    // A count far past the file's end.
    let err = refusal(&in_legacy(&views_of_one_storage(1, 8), 8, u64::MAX));
    assert!(err.contains("its tensors say 8"), "{err}");
}
