//! What a ransomware-resistant S3 repository needs that `object_store` does not offer: the
//! bucket's versioning and Object Lock configuration, an object's retention (read, extended),
//! and the versions of objects. Each is one SigV4-signed request (`object_store`'s
//! `AwsAuthorizer`, with the store's own credentials and HTTP client), its XML answer parsed
//! by a pure function tested on the documented shapes.

use chrono::{DateTime, Utc};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpRequest, HttpRequestBody};
use serde::Deserialize;

/// The key a prune deletes to learn whether its identity may delete: never written.
pub const DELETE_CHECK_KEY: &str = "locks/delete-check";

/// A bucket's versioning state (`GetBucketVersioning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: an overwritten or deleted object is gone.
    Off,
    Enabled,
    /// Was enabled, is not now: new writes replace the null version.
    Suspended,
}

/// An Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Removable only with `s3:BypassGovernanceRetention`.
    Governance,
    /// Removable by nobody until it expires.
    Compliance,
}

impl LockMode {
    pub fn header(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// One version of an object (`ListObjectVersions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The key below the repository's prefix.
    pub key: String,
    pub version_id: String,
    pub last_modified: DateTime<Utc>,
    /// A delete marker: the object looked deleted from then on.
    pub delete_marker: bool,
    /// Bytes (0 for a delete marker).
    pub size: u64,
    /// The key's current version (`IsLatest`): what decides between versions written within
    /// the same second (S3 times versions to the second only).
    pub is_latest: bool,
}

/// Signed requests to one bucket.
#[derive(Clone)]
pub struct Control {
    pub(super) client: HttpClient,
    pub(super) credentials: AwsCredentialProvider,
    pub(super) region: String,
    /// `https://endpoint/bucket` (path style) or `https://bucket.endpoint`.
    pub(super) base: String,
    /// The repository's prefix with its trailing `/`, or empty.
    pub(super) prefix: String,
    pub(super) bucket: String,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

/// Percent-encodes a query value or a key's characters as SigV4 wants them (unreserved kept;
/// `/` kept in paths).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Control {
    async fn send(
        &self,
        method: &str,
        path_key: Option<&str>,
        query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(u16, http::HeaderMap, Vec<u8>), String> {
        let mut url = self.base.clone();
        if let Some(k) = path_key {
            url.push('/');
            url.push_str(&encode(&format!("{}{k}", self.prefix), true));
        } else {
            url.push('/');
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut b = http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            b = b.header(*name, value);
        }
        let mut req: HttpRequest = b
            .body(HttpRequestBody::from(body))
            .map_err(|e| format!("building {method} {url}: {e}"))?;
        let cred = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| format!("credentials: {e}"))?;
        AwsAuthorizer::new(&cred, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| format!("signing {method} {url}: {e}"))?;
        let resp = self
            .client
            .execute(req)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .bytes()
            .await
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        Ok((parts.status.as_u16(), parts.headers, bytes.to_vec()))
    }

    fn failed(what: &str, status: u16, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let code = parse_error_code(&text).unwrap_or_default();
        format!("{what}: HTTP {status} {code}")
    }

    /// Whether this identity may delete `key` (a DELETE of it: 2xx yes, 403 no).
    pub async fn may_delete(&self, key: &str) -> Result<bool, String> {
        let (status, _, body) = self.send("DELETE", Some(key), "", &[], Vec::new()).await?;
        match status {
            200..=299 => Ok(true),
            403 => Ok(false),
            _ => Err(Self::failed(&format!("DeleteObject {key}"), status, &body)),
        }
    }

    /// The bucket's versioning (`GET ?versioning`).
    pub async fn versioning(&self) -> Result<Versioning, String> {
        let (status, _, body) = self
            .send("GET", None, "versioning", &[], Vec::new())
            .await?;
        if status != 200 {
            return Err(Self::failed("GetBucketVersioning", status, &body));
        }
        Ok(parse_versioning(&String::from_utf8_lossy(&body)))
    }

    /// Whether the bucket has Object Lock enabled (`GET ?object-lock`).
    pub async fn object_lock_enabled(&self) -> Result<bool, String> {
        let (status, _, body) = self
            .send("GET", None, "object-lock", &[], Vec::new())
            .await?;
        match status {
            200 => Ok(String::from_utf8_lossy(&body)
                .contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>")),
            404 => Ok(false),
            _ => {
                let text = String::from_utf8_lossy(&body);
                if parse_error_code(&text).as_deref()
                    == Some("ObjectLockConfigurationNotFoundError")
                {
                    Ok(false)
                } else {
                    Err(Self::failed("GetObjectLockConfiguration", status, &body))
                }
            }
        }
    }

    /// The retention of `key` (its latest version): mode and date, `None` without one.
    pub async fn retention(&self, key: &str) -> Result<Option<(LockMode, DateTime<Utc>)>, String> {
        let (status, headers, body) = self.send("HEAD", Some(key), "", &[], Vec::new()).await?;
        if status != 200 {
            return Err(Self::failed(&format!("HeadObject {key}"), status, &body));
        }
        let mode = headers
            .get("x-amz-object-lock-mode")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_uppercase);
        let until = headers
            .get("x-amz-object-lock-retain-until-date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|d| d.with_timezone(&Utc));
        Ok(match (mode.as_deref(), until) {
            (Some("GOVERNANCE"), Some(u)) => Some((LockMode::Governance, u)),
            (Some("COMPLIANCE"), Some(u)) => Some((LockMode::Compliance, u)),
            _ => None,
        })
    }

    /// Sets the retention of `key`'s latest version to `mode` until `until` (an extension:
    /// S3 refuses to shorten one without bypass rights, which hopsdr never asks for).
    pub async fn set_retention(
        &self,
        key: &str,
        mode: LockMode,
        until: DateTime<Utc>,
    ) -> Result<(), String> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.header(),
            retain_date(until)
        );
        let headers = checksum_headers(body.as_bytes());
        let (status, _, answer) = self
            .send("PUT", Some(key), "retention", &headers, body.into_bytes())
            .await?;
        if status != 200 {
            return Err(Self::failed(
                &format!("PutObjectRetention {key}"),
                status,
                &answer,
            ));
        }
        Ok(())
    }

    /// Stores `data` as `key` with retention `mode` until `until`.
    pub async fn put_locked(
        &self,
        key: &str,
        data: Vec<u8>,
        mode: LockMode,
        until: DateTime<Utc>,
    ) -> Result<(), String> {
        let mut headers = checksum_headers(&data);
        headers.push(("x-amz-object-lock-mode", mode.header().to_string()));
        headers.push(("x-amz-object-lock-retain-until-date", retain_date(until)));
        let (status, _, answer) = self.send("PUT", Some(key), "", &headers, data).await?;
        if status != 200 {
            return Err(Self::failed(&format!("PutObject {key}"), status, &answer));
        }
        Ok(())
    }

    /// Makes version `version_id` of `key` its current version again (CopyObject of that
    /// version onto the key; objects up to 5 GiB).
    pub async fn copy_version(&self, key: &str, version_id: &str) -> Result<(), String> {
        let source = format!(
            "/{}/{}?versionId={}",
            self.bucket,
            encode(&format!("{}{key}", self.prefix), true),
            encode(version_id, false)
        );
        let (status, _, body) = self
            .send(
                "PUT",
                Some(key),
                "",
                &[("x-amz-copy-source", source)],
                Vec::new(),
            )
            .await?;
        if status != 200 {
            return Err(Self::failed(
                &format!("CopyObject {key} version {version_id}"),
                status,
                &body,
            ));
        }
        Ok(())
    }

    /// Every version and delete marker of the keys under `prefix` (below the repository's).
    pub async fn versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, String> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let mut query = format!("prefix={}&versions=", encode(&full, false));
            if let Some(k) = &key_marker {
                query = format!("key-marker={}&{query}", encode(k, false));
            }
            if let Some(v) = &version_marker {
                query.push_str(&format!("&version-id-marker={}", encode(v, false)));
            }
            let (status, _, body) = self.send("GET", None, &query, &[], Vec::new()).await?;
            if status != 200 {
                return Err(Self::failed("ListObjectVersions", status, &body));
            }
            let page = parse_versions(&String::from_utf8_lossy(&body))?;
            out.extend(page.versions.into_iter().filter_map(|mut v| {
                v.key = v.key.strip_prefix(&self.prefix)?.to_string();
                Some(v)
            }));
            if !page.truncated {
                return Ok(out);
            }
            key_marker = page.next_key_marker;
            version_marker = page.next_version_marker;
        }
    }
}

/// `x-amz-checksum-sha256` of `data` and the algorithm's name: what S3 wants on requests that
/// set a lock (Content-MD5, or an SDK checksum).
fn checksum_headers(data: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    vec![
        ("x-amz-sdk-checksum-algorithm", "SHA256".to_string()),
        (
            "x-amz-checksum-sha256",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
        ),
    ]
}

/// A retention date as S3 takes it (whole seconds, `Z`).
pub fn retain_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `<Code>` of an S3 error document.
pub fn parse_error_code(xml: &str) -> Option<String> {
    let start = xml.find("<Code>")? + "<Code>".len();
    let end = xml[start..].find("</Code>")? + start;
    Some(xml[start..end].to_string())
}

/// A `VersioningConfiguration` document.
pub fn parse_versioning(xml: &str) -> Versioning {
    if xml.contains("<Status>Enabled</Status>") {
        Versioning::Enabled
    } else if xml.contains("<Status>Suspended</Status>") {
        Versioning::Suspended
    } else {
        Versioning::Off
    }
}

/// One page of `ListObjectVersions`.
#[derive(Debug, Default)]
pub struct VersionsPage {
    pub versions: Vec<ObjectVersion>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVersions {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_version_id_marker: Option<String>,
    #[serde(rename = "$value", default)]
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
enum RawEntry {
    Version(RawVersion),
    DeleteMarker(RawVersion),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVersion {
    key: String,
    version_id: String,
    last_modified: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    is_latest: bool,
}

/// Parses a `ListVersionsResult` document.
pub fn parse_versions(xml: &str) -> Result<VersionsPage, String> {
    let raw: RawVersions =
        quick_xml::de::from_str(xml).map_err(|e| format!("ListObjectVersions answer: {e}"))?;
    let mut page = VersionsPage {
        truncated: raw.is_truncated,
        next_key_marker: raw.next_key_marker,
        next_version_marker: raw.next_version_id_marker,
        ..Default::default()
    };
    for e in raw.entries {
        let (v, delete_marker) = match e {
            RawEntry::Version(v) => (v, false),
            RawEntry::DeleteMarker(v) => (v, true),
            RawEntry::Other => continue,
        };
        let last_modified = DateTime::parse_from_rfc3339(&v.last_modified)
            .map_err(|e| {
                format!(
                    "ListObjectVersions: bad LastModified {:?}: {e}",
                    v.last_modified
                )
            })?
            .with_timezone(&Utc);
        page.versions.push(ObjectVersion {
            key: v.key,
            version_id: v.version_id,
            last_modified,
            delete_marker,
            size: v.size,
            is_latest: v.is_latest,
        });
    }
    Ok(page)
}

/// The version of each key that was current at `at`: the newest version written at or before
/// it, unless that is a delete marker. `versions` in any order.
pub fn as_of(
    versions: &[ObjectVersion],
    at: DateTime<Utc>,
) -> std::collections::BTreeMap<String, String> {
    current_at(versions, at)
        .into_iter()
        .map(|(k, v)| (k, v.version_id))
        .collect()
}

/// As [`as_of`], with each version whole (its size).
pub fn current_at(
    versions: &[ObjectVersion],
    at: DateTime<Utc>,
) -> std::collections::BTreeMap<String, ObjectVersion> {
    let mut newest: std::collections::BTreeMap<&str, &ObjectVersion> = Default::default();
    for v in versions.iter().filter(|v| v.last_modified <= at) {
        let e = newest.entry(&v.key).or_insert(v);
        // Written later, or in the same second and the latest of the key.
        if v.last_modified > e.last_modified || (v.last_modified == e.last_modified && v.is_latest)
        {
            *e = v;
        }
    }
    newest
        .into_iter()
        .filter(|(_, v)| !v.delete_marker)
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn versioning_documents() {
        let doc = |s: &str| {
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{s}</VersioningConfiguration>")
        };
        assert_eq!(
            parse_versioning(&doc("<Status>Enabled</Status>")),
            Versioning::Enabled
        );
        assert_eq!(
            parse_versioning(&doc("<Status>Suspended</Status>")),
            Versioning::Suspended
        );
        assert_eq!(parse_versioning(&doc("")), Versioning::Off);
        assert_eq!(
            parse_error_code(
                "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            )
            .as_deref(),
            Some("AccessDenied")
        );
    }

    #[test]
    fn version_listings_and_what_was_current_at_a_time() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>r/manifests/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
  <DeleteMarker><Key>r/manifests/a</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-06T12:00:00.000Z</LastModified></DeleteMarker>
  <Version><Key>r/manifests/a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-06T10:00:00.000Z</LastModified><ETag>"x"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Version>
  <Version><Key>r/manifests/a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-06T11:00:00.000Z</LastModified><ETag>"y"</ETag><Size>3</Size></Version>
  <Version><Key>r/manifests/b</Key><VersionId>w1</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-06T11:30:00Z</LastModified><ETag>"z"</ETag><Size>3</Size></Version>
</ListVersionsResult>"#;
        let page = parse_versions(xml).unwrap();
        assert!(!page.truncated);
        assert_eq!(page.versions.len(), 4);
        assert!(page.versions[0].delete_marker);
        let at = |s: &str| as_of(&page.versions, t(s));
        assert!(at("2026-12-06T09:00:00Z").is_empty());
        assert_eq!(
            at("2026-12-06T10:30:00Z")
                .get("r/manifests/a")
                .map(String::as_str),
            Some("v1")
        );
        let noon_less = at("2026-12-06T11:45:00Z");
        assert_eq!(
            noon_less.get("r/manifests/a").map(String::as_str),
            Some("v2")
        );
        assert_eq!(
            noon_less.get("r/manifests/b").map(String::as_str),
            Some("w1")
        );
        // After the delete marker: a is gone, b stays.
        let later = at("2026-12-06T13:00:00Z");
        assert_eq!(later.get("r/manifests/a"), None);
        assert!(later.contains_key("r/manifests/b"));
        // Within one second (S3's resolution), the latest decides, in any listing order.
        let same = r#"<ListVersionsResult><IsTruncated>false</IsTruncated>
  <Version><Key>r/k</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-06T12:00:00.000Z</LastModified><Size>3</Size></Version>
  <DeleteMarker><Key>r/k</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-06T12:00:00.000Z</LastModified></DeleteMarker>
</ListVersionsResult>"#;
        let page = parse_versions(same).unwrap();
        assert!(as_of(&page.versions, t("2026-12-06T12:00:05Z")).is_empty());

        let truncated = r#"<ListVersionsResult><IsTruncated>true</IsTruncated><NextKeyMarker>k</NextKeyMarker><NextVersionIdMarker>v</NextVersionIdMarker></ListVersionsResult>"#;
        let p = parse_versions(truncated).unwrap();
        assert!(p.truncated && p.versions.is_empty());
        assert_eq!(
            (
                p.next_key_marker.as_deref(),
                p.next_version_marker.as_deref()
            ),
            (Some("k"), Some("v"))
        );
        assert!(parse_versions("not xml").is_err());
    }

    #[test]
    fn keys_and_values_are_encoded_for_signing() {
        assert_eq!(
            encode("r/manifests/2026 x+y", true),
            "r/manifests/2026%20x%2By"
        );
        assert_eq!(encode("r/manifests/", false), "r%2Fmanifests%2F");
        assert_eq!(
            retain_date(t("2026-12-06T10:00:00.123Z")),
            "2026-12-06T10:00:00Z"
        );
    }
}
