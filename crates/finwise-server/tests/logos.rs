//! Account and group logos over HTTP (O6–O8): uploads resized to 128×128 PNG whatever they
//! claim, served to members only, not deleted while an account shows them; malformed images,
//! decompression bombs and oversized uploads refused.

use std::io::Cursor;

use finwise_testkit::{entry, new_id, ts, TestServer, Ws};
use serde_json::{json, Value};

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// A PNG whose header declares `w`×`h` pixels (far more than its few bytes of data hold).
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for b in bytes {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        out.extend(&body);
        out.extend(crc(&body).to_be_bytes());
        out
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

async fn upload(s: &TestServer, token: &str, tenant: &str, bytes: Vec<u8>, claimed: &str) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("logo").mime_str(claimed).unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("tenant_id", tenant.to_owned())
        .text("entity_id", "acc-1")
        .text("entity_type", "account");
    let r = s.http().post(s.url("/api/v1/logos/upload")).bearer_auth(token).multipart(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logos_are_resized_served_to_members_and_kept_while_used() {
    let s = TestServer::start(|c| c.max_logo_bytes = 256 * 1024).await;
    let (_, token, _) = s.user("logo").await;
    let (_, stranger, _) = s.user("stranger").await;
    let tenant = s.tenant(&token, "Logos").await;

    let photo =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 99])));
    // a JPEG that claims to be a PNG: the bytes decide
    let (status, body) =
        upload(&s, &token, &tenant, encoded(photo.clone(), image::ImageFormat::Jpeg), "image/png").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["entity_id"].as_str(), body["entity_type"].as_str()), (Some("acc-1"), Some("account")));
    let path = body["logo_path"].as_str().unwrap().to_owned();
    assert!(path.starts_with(&format!("{tenant}/")) && path.ends_with(".png"), "{path}");
    let r = s.http().get(s.url(&format!("/api/v1/logos/{path}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let stored = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((stored.width(), stored.height()), (128, 128));
    let rgba = image::DynamicImage::ImageRgba8(image::RgbaImage::new(40, 40));
    assert_eq!(upload(&s, &token, &tenant, encoded(rgba, image::ImageFormat::Png), "image/png").await.0, 201);

    // members only
    let r = s.http().get(s.url(&format!("/api/v1/logos/{path}"))).bearer_auth(&stranger).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        upload(&s, &stranger, &tenant, encoded(photo.clone(), image::ImageFormat::Png), "image/png").await.0,
        403
    );
    let r =
        s.http().get(s.url(&format!("/api/v1/logos/{tenant}/..%2Fauth.db"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // refused: not an image, a bomb (declares 60000×60000), too many bytes
    for (bytes, says) in [
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(), "not a PNG or JPEG"),
        (png_declaring(60_000, 60_000), "larger than"),
        (png_declaring(64, 64), "cannot be decoded"),
    ] {
        let (status, body) = upload(&s, &token, &tenant, bytes, "image/png").await;
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(says), "{body} should say {says}");
    }
    // a body that is not a form at all: 0.4's 422 form naming the body, not a plain-text 400
    for (content_type, says) in [("application/json", "multipart/form-data"), ("multipart/form-data", "boundary")] {
        let r = s
            .http()
            .post(s.url("/api/v1/logos/upload"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{content_type}");
        let body: Value = r.json().await.expect("a JSON error body");
        assert_eq!(body["detail"][0]["loc"], json!(["body"]), "{body}");
        assert!(body["detail"][0]["msg"].as_str().unwrap().contains(says), "{body} should say {says}");
    }
    let url = s.url("/api/v1/logos/upload");
    let too_large =
        finwise_testkit::status_for_declared_body(&url, &token, "multipart/form-data; boundary=x", 300 * 1024);
    assert_eq!(too_large.await, 413);

    // in use by an account: 409 until the account lets go of it
    let mut ws = Ws::connect(&s.ws_url(&tenant, Some(&token))).await;
    let account = json!({"id": new_id(), "name": "Giro", "isActive": true, "isOfflineBudget": false, "accountGroupId": "g",
        "balance": 0, "offset": 0, "logo_path": path, "updated_at": ts(-2000)});
    ws.entry(&entry(&tenant, "Account", "create", account.clone())).await;
    let delete = || s.http().delete(s.url(&format!("/api/v1/logos/{path}"))).bearer_auth(&token).send();
    let r = delete().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("Giro"));
    let mut without = account;
    without["logo_path"] = Value::Null;
    without["updated_at"] = json!(ts(-1000));
    ws.entry(&entry(&tenant, "Account", "update", without)).await;
    // in use by an account group: 409 until the group is deleted
    let group_id = new_id();
    let group = json!({"id": group_id, "name": "Banken", "sortOrder": 1, "logo_path": path, "updated_at": ts(-2000)});
    ws.entry(&entry(&tenant, "AccountGroup", "create", group)).await;
    let r = delete().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("Banken"));
    let gone = json!({"id": group_id, "updated_at": ts(-1000)});
    ws.entry(&entry(&tenant, "AccountGroup", "delete", gone)).await;
    assert_eq!(delete().await.unwrap().status(), 204);
    assert_eq!(delete().await.unwrap().status(), 404);
    let r = s.http().get(s.url(&format!("/api/v1/logos/{path}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
