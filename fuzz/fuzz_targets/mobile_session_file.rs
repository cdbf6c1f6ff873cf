//! Mobile session files (`<data>/MobileApps/<folder>/<id>`, read at start and at
//! each refresh, and by the admin routes): `SessionFile::parse` (BOM, JSON object,
//! `mobi` 2–4 validation through `SessionFile::from_json`).
//!
//! Properties: a file that validates lies where its content says
//! (`check_location(folder(), id)`), its parts are safe path parts, its token
//! decodes to its fields, and what it writes back (`to_bytes`, also after
//! `set_status` / `set_email`) validates again to the same session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond_mobile::file::{FileError, check_path_part, is_session_file_name};
use sessiond_mobile::token::decode;
use sessiond_mobile::{SessionFile, Status};

fn same(a: &SessionFile, b: &SessionFile) {
    assert_eq!(
        (
            &a.app_id,
            &a.team_id,
            &a.id,
            &a.device_id,
            &a.email,
            a.status,
            &a.token
        ),
        (
            &b.app_id,
            &b.team_id,
            &b.id,
            &b.device_id,
            &b.email,
            b.status,
            &b.token
        )
    );
    assert_eq!(a.json, b.json);
}

fuzz_target!(|data: &[u8]| {
    let file = match SessionFile::parse(data) {
        Ok(f) => f,
        Err(e) => {
            assert!(
                (2..=4).contains(&e.code()),
                "parse gives mobi 2, 3 or 4: {e}"
            );
            let _ = e.to_string();
            return;
        }
    };
    file.check_location(&file.folder(), &file.id.clone())
        .expect("a valid file lies where its content says");
    assert!(matches!(
        file.check_location(&format!("{}x", file.folder()), &file.id),
        Err(FileError::Location { .. })
    ));
    assert!(is_session_file_name(&file.id));
    check_path_part("application.id", &file.app_id).unwrap();
    if !file.team_id.is_empty() {
        check_path_part("team.id", &file.team_id).unwrap();
    }
    let fields = decode(&file.token).expect("the token decodes");
    assert_eq!(
        (&fields.app_id, &fields.id, &fields.team_id),
        (&file.app_id, &file.id, &file.team_id)
    );

    let bytes = file.to_bytes();
    assert_eq!(bytes.first(), Some(&b'{'));
    let again = SessionFile::parse(&bytes).expect("a file's own bytes validate");
    same(&file, &again);

    let mut edited = file.clone();
    let status = match file.status {
        Status::Accepted => Status::Pending,
        Status::Pending => Status::Accepted,
    };
    edited.set_status(status);
    edited.set_email(&file.device_id);
    let reread = SessionFile::parse(&edited.to_bytes()).expect("an edited file validates");
    same(&edited, &reread);
    assert_eq!(reread.status, status);
    assert_eq!(reread.email, file.device_id);
});
