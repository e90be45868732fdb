use super::*;

#[test]
fn dump_captures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protobuf/testdata");
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let body = std::fs::read(&path).unwrap();
        let (v, k, obj) = decode_envelope(&body).unwrap();
        println!("{} {v} {k}\n{}", path.display(), serde_json::to_string(&obj).unwrap());
    }
}
