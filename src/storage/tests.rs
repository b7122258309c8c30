use super::*;

pub(crate) fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corekv-storage")
        .tempdir()
        .unwrap()
}

#[test]
fn storage_basic_put_get_delete() {
    let dir = tmpdir();
    let path = dir.path().join("db");
    let db = Db::open(&path, DbOptions::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    for i in 0..5000u32 {
        w.put(Bucket::Key, &i.to_be_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    assert_eq!(
        w.get(Bucket::Key, &7u32.to_be_bytes()).unwrap(),
        Some(&b"v7"[..])
    );
    w.commit().unwrap();
    db.check().unwrap();
    let r = db.begin_read();
    assert_eq!(
        r.get(Bucket::Key, &4999u32.to_be_bytes()).unwrap(),
        Some(&b"v4999"[..])
    );
    assert_eq!(
        r.count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        5000
    );
    let mut w = db.begin_write().unwrap();
    for i in 0..5000u32 {
        if i % 3 != 0 {
            assert!(w.delete(Bucket::Key, &i.to_be_bytes()).unwrap());
        }
    }
    w.commit().unwrap();
    db.check().unwrap();
    let r2 = db.begin_read();
    assert_eq!(
        r2.count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        1667
    );
    // the old reader still sees everything
    assert_eq!(
        r.count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        5000
    );
    let keys: Vec<u32> = r2
        .range(
            Bucket::Key,
            Bound::Included(&10u32.to_be_bytes()[..]),
            Bound::Excluded(&22u32.to_be_bytes()[..]),
            true,
        )
        .map(|kv| u32::from_be_bytes(kv.unwrap().0.try_into().unwrap()))
        .collect();
    assert_eq!(keys, vec![21, 18, 15, 12]);
    drop(r);
    drop(r2);
    drop(db);
    let db = Db::open(
        &path,
        DbOptions {
            full_check_on_open: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        db.begin_read()
            .count(Bucket::Key, Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        1667
    );
}
