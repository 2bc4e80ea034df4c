//! Account and account-group logos (0.4 endpoints O6–O8): an uploaded PNG or JPEG is decoded in
//! a bounded way (size and dimension limits, so a decompression bomb is refused before it is
//! decoded, a few decodes at once), resized to 128×128 and stored as PNG under
//! `<tenant>/<uuid>.png` in the central tables — with the tenant's other data in the store, so
//! backups, `finwise migrate` and every server on a shared database have them.

use std::io::Cursor;

use base64::Engine;
use serde_json::Value;

use crate::{
    auth::{naive_now, AuthError, AuthStore},
    sql_params,
    storage::Store,
    TenantId,
};

/// The side of a stored logo, in pixels (0.4: 128×128, aspect ratio not kept).
pub const LOGO_SIDE: u32 = 128;
/// The largest width or height an uploaded image may declare.
pub const MAX_DIMENSION: u32 = 8192;
/// The most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// Why an upload is not a logo.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("not a PNG or JPEG image")]
    Format,
    #[error("the image is larger than {MAX_DIMENSION}×{MAX_DIMENSION} pixels or needs too much memory to decode")]
    TooLarge,
    #[error("the image cannot be decoded: {0}")]
    Broken(String),
}

/// Decodes `bytes` (the format from the bytes themselves, never from what the client claims)
/// and returns the 128×128 PNG to store.
pub fn to_logo_png(bytes: &[u8]) -> Result<Vec<u8>, Rejected> {
    use image::{ImageFormat, ImageReader};
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| Rejected::Format)?;
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err(Rejected::Format);
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => Rejected::TooLarge,
        other => Rejected::Broken(other.to_string()),
    })?;
    let small = img.resize_exact(LOGO_SIDE, LOGO_SIDE, image::imageops::FilterType::Lanczos3);
    let small = if small.color().has_alpha() {
        image::DynamicImage::ImageRgba8(small.to_rgba8())
    } else {
        image::DynamicImage::ImageRgb8(small.to_rgb8())
    };
    let mut out = Vec::new();
    small.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).map_err(|e| Rejected::Broken(e.to_string()))?;
    Ok(out)
}

/// A stored logo's file name: a UUID and `.png` (0.4 also wrote `.jpg`); nothing else names one.
pub fn valid_name(name: &str) -> bool {
    let Some((stem, ext)) = name.rsplit_once('.') else { return false };
    uuid::Uuid::parse_str(stem).is_ok_and(|u| u.hyphenated().to_string() == stem)
        && ["png", "jpg", "jpeg"].contains(&ext)
}

/// The content type of a stored logo by its name.
pub fn content_type(name: &str) -> &'static str {
    if name.ends_with(".png") {
        "image/png"
    } else {
        "image/jpeg"
    }
}

impl AuthStore {
    /// Stores a logo of `tenant`; returns its file name.
    pub fn put_logo(&self, tenant: &TenantId, png: &[u8]) -> Result<String, AuthError> {
        let name = format!("{}.png", uuid::Uuid::new_v4());
        let data = base64::engine::general_purpose::STANDARD.encode(png);
        self.tx(|db| {
            db.execute(
                "INSERT INTO logos (tenant_id, name, data, created_at) VALUES ($1, $2, $3, $4)",
                sql_params![tenant.as_str(), &name, &data, &naive_now()],
            )?;
            Ok(())
        })?;
        Ok(name)
    }

    /// A stored logo's bytes.
    pub fn logo(&self, tenant: &TenantId, name: &str) -> Result<Option<Vec<u8>>, AuthError> {
        let row = self.tx(|db| {
            Ok(db.query_opt(
                "SELECT data FROM logos WHERE tenant_id = $1 AND name = $2",
                sql_params![tenant.as_str(), name],
            )?)
        })?;
        row.map(|r| {
            let text = r.text(0)?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| AuthError::Other(format!("stored logo {name} is damaged: {e}")))
        })
        .transpose()
    }

    /// Removes a stored logo; false when there was none.
    pub fn delete_logo(&self, tenant: &TenantId, name: &str) -> Result<bool, AuthError> {
        self.tx(|db| {
            Ok(db
                .execute("DELETE FROM logos WHERE tenant_id = $1 AND name = $2", sql_params![tenant.as_str(), name])?
                > 0)
        })
    }

    /// Every stored logo: `(tenant, name, base64 data, created_at)` (`finwise migrate`).
    pub fn all_logos(&self) -> Result<Vec<(String, String, String, String)>, AuthError> {
        self.tx(|db| {
            db.query("SELECT tenant_id, name, data, created_at FROM logos ORDER BY tenant_id, name", &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?, r.text(3)?)))
                .collect()
        })
    }

    /// Stores a copied logo as it is, replacing one of the same name (`finwise migrate`,
    /// `import-legacy` run again).
    pub fn import_logo(&self, logo: &(String, String, String, String)) -> Result<(), AuthError> {
        self.tx(|db| {
            db.execute("DELETE FROM logos WHERE tenant_id = $1 AND name = $2", sql_params![&logo.0, &logo.1])?;
            db.execute(
                "INSERT INTO logos (tenant_id, name, data, created_at) VALUES ($1, $2, $3, $4)",
                sql_params![&logo.0, &logo.1, &logo.2, &logo.3],
            )?;
            Ok(())
        })
    }
}

/// The names of the live accounts and account groups whose `logo_path` is `path` (a logo still
/// in use is not deleted).
pub fn users_of(store: &dyn Store, tenant: &TenantId, path: &str) -> crate::storage::Result<Vec<String>> {
    use finwise_protocol::EntityType;
    store.read(tenant, |r| {
        let mut names = Vec::new();
        for t in [EntityType::Account, EntityType::AccountGroup] {
            r.live_of_type(t, &mut |json| {
                if json.contains(path) {
                    if let Ok(v) = serde_json::from_str::<Value>(json) {
                        if v["logo_path"] == path {
                            names.push(format!("{} '{}'", t, v["name"].as_str().unwrap_or_default()));
                        }
                    }
                }
                true
            })?;
        }
        Ok(names)
    })
}
