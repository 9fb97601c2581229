//! The RDS CA bundle the runtime image carries at
//! `/etc/ssl/certs/rds-global-bundle.pem`, which the app on AWS verifies the
//! database's certificate against (DB_SSLMODE=verify-full).
//!
//! Online builds download AWS's bundle inside the build (the Dockerfile's
//! `rds-ca-online` stage). An offline build cannot, so the host puts a
//! bundle in `target/docker-rds-ca/` for the `rds-ca-file` stage:
//! - the file XTASK_RDS_CA_BUNDLE names (AWS's bundle, downloaded by hand
//!   on a machine with network), for images meant for AWS;
//! - otherwise the sandbox's RDS CA: on a machine without network the only
//!   RDS there is is the sandbox's, whose servers present certificates
//!   signed by it. An image carrying it cannot reach a real RDS instance
//!   (verify-full fails, the smoke check fails, the deploy rolls back), which
//!   is the safe way for such an image to be wrong.
//!
//! The sandbox's RDS CA is one per checkout, under `target/sandbox-rds-ca/`,
//! so every offline image of one commit is the same image, whichever
//! sandbox it is deployed to; `sandbox up` hands it to the sandbox's RDS.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::support::{ctx::Ctx, fs::write_atomic, ui};

/// Where an offline build's bundle goes; the Dockerfile's `rds-ca-file`
/// stage copies it, and its ignore file lets exactly it in.
pub const BUNDLE: &str = "target/docker-rds-ca/global-bundle.pem";
/// The sandbox's RDS CA: `ca.pem` and its key `ca.key` (0600).
pub const SANDBOX_CA_DIR: &str = "target/sandbox-rds-ca";
/// A bundle an offline build should carry instead of the sandbox's CA.
pub const BUNDLE_VARIABLE: &str = "XTASK_RDS_CA_BUNDLE";

/// `RDS_CA=file` for offline builds; online builds keep the default.
pub fn build_arg(offline: bool) -> Option<(String, String)> {
    offline.then(|| ("RDS_CA".to_owned(), "file".to_owned()))
}

/// Puts the bundle of an offline build in place (see the module's comment)
/// and says which one it is.
pub fn prepare_offline_bundle(ctx: &Ctx) -> Result<()> {
    let (source, description) = match ctx.env_var(BUNDLE_VARIABLE) {
        Some(path) => {
            let path = PathBuf::from(path);
            (ctx.root.join(&path), format!("{} ({BUNDLE_VARIABLE})", path.display()))
        }
        None => (
            sandbox_ca(ctx)?.join("ca.pem"),
            format!(
                "the sandbox's RDS CA: such an image reaches the sandbox's RDS, not AWS's; set {BUNDLE_VARIABLE} to \
                 AWS's global-bundle.pem for an offline image meant for AWS"
            ),
        ),
    };
    let target = ctx.root.join(BUNDLE);
    if ctx.would(format_args!("copy {} to {}", source.display(), target.display())) {
        return Ok(());
    }
    let bundle = read_bundle(&source)?;
    ui::detail(&format!("RDS CA bundle of this offline build: {description}"));
    if fs::read(&target).is_ok_and(|current| current == bundle) {
        return Ok(());
    }
    let dir = target.parent().expect("BUNDLE has a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&target, &bundle, 0o644)
}

/// A PEM file of certificates, or an error naming the file and the fix.
fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    let bundle = fs::read(path).with_context(|| {
        format!(
            "reading the RDS CA bundle {} ({BUNDLE_VARIABLE}): download it from \
             https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem",
            path.display()
        )
    })?;
    if !String::from_utf8_lossy(&bundle).contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "{} holds no PEM certificate: {BUNDLE_VARIABLE} must name a CA bundle such as AWS's global-bundle.pem",
            path.display()
        );
    }
    Ok(bundle)
}

/// The directory of the sandbox's RDS CA, made with the openssl CLI the
/// first time it is needed. Several builds and sandboxes may ask at once:
/// a lock file lets one make it, and the directory appears whole (made
/// under another name, then renamed).
pub fn sandbox_ca(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx.root.join(SANDBOX_CA_DIR);
    if dir.join("ca.pem").is_file() {
        return Ok(dir);
    }
    if ctx.would(format_args!("make the sandbox's RDS CA in {} (openssl req -x509)", dir.display())) {
        return Ok(dir);
    }
    let parent = dir.parent().expect("SANDBOX_CA_DIR has a parent");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let lock_path = parent.join(".sandbox-rds-ca.lock");
    let lock = fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    if dir.join("ca.pem").is_file() {
        return Ok(dir);
    }
    ui::step(&format!("making the sandbox's RDS CA in {SANDBOX_CA_DIR} (openssl)"));
    let partial = parent.join(".sandbox-rds-ca.partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    // P-256 and ten years: a key that takes no time to make, for a CA that
    // only this checkout's sandboxes and offline images know.
    let made = ctx
        .sh
        .cmd("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "3650", "-subj", "/CN=xtask sandbox RDS CA", "-keyout"])
        .arg(partial.join("ca.key"))
        .arg("-out")
        .arg(partial.join("ca.pem"))
        .quiet()
        .ignore_stderr()
        .run()
        .context("making the sandbox's RDS CA with the openssl CLI (apt-get install openssl)");
    if let Err(err) = made {
        let _ = fs::remove_dir_all(&partial);
        return Err(err);
    }
    set_mode(&partial.join("ca.key"), 0o600)?;
    fs::rename(&partial, &dir).with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    Ok(dir)
}

/// Where the image keeps the bundle (docker/Dockerfile, infra's DB_SSLROOTCERT).
pub const BUNDLE_IN_IMAGE: &str = "/etc/ssl/certs/rds-global-bundle.pem";

/// Refuses an image whose RDS CA bundle is this checkout's sandbox RDS CA
/// (an offline build without XTASK_RDS_CA_BUNDLE) on its way to
/// `environment`, which is no sandbox: its tasks would refuse every real
/// RDS certificate and the deploy would end in a rollback, long after the
/// push could have said why.
pub fn refuse_sandbox_ca(ctx: &Ctx, image: &str, environment: &str) -> Result<()> {
    let Ok(sandbox_ca) = fs::read_to_string(ctx.root.join(SANDBOX_CA_DIR).join("ca.pem")) else {
        // No sandbox CA on this machine: no image built here carries it.
        return Ok(());
    };
    if ctx.would(format_args!("check that {image} does not carry the sandbox's RDS CA as its RDS bundle")) {
        return Ok(());
    }
    let Some(bundle) = crate::image::docker::file_in_image(ctx, image, BUNDLE_IN_IMAGE)? else {
        ui::warn(&format!(
            "{image} has no {BUNDLE_IN_IMAGE}: its tasks cannot verify RDS (DB_SSLROOTCERT); rebuild it"
        ));
        return Ok(());
    };
    if String::from_utf8_lossy(&bundle).contains(sandbox_ca.trim()) {
        bail!(
            "{image} carries the sandbox's RDS CA ({SANDBOX_CA_DIR}/ca.pem) as its RDS CA bundle, so on \
             {environment:?} it could not verify the database and would not start: it is an offline build made \
             without {BUNDLE_VARIABLE}. Build it with network (AWS's bundle is downloaded), or download \
             https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem and set {BUNDLE_VARIABLE} to it"
        );
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::DOCKERFILE;

    /// The Dockerfile and the ignore file must agree with what an offline
    /// build writes, and the online stage must fetch AWS's bundle.
    #[test]
    fn the_dockerfile_takes_the_bundle_from_aws_online_and_from_the_host_offline() {
        let root = crate::support::fs::project_root();
        let dockerfile = fs::read_to_string(root.join(DOCKERFILE)).unwrap();
        let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
        assert!(lines.contains(&"ARG RDS_CA=online"));
        assert!(
            lines.contains(&"ADD https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /global-bundle.pem")
        );
        assert!(lines.contains(&format!("COPY {BUNDLE} /global-bundle.pem").as_str()));
        assert!(dockerfile.contains(&format!("/rootfs{BUNDLE_IN_IMAGE}")));
        let ignore = fs::read_to_string(root.join("docker/Dockerfile.dockerignore")).unwrap();
        assert!(ignore.lines().any(|line| line.trim() == format!("!{BUNDLE}")), "the ignore file must let {BUNDLE} in");
        // What infra tells the app to verify against is what the image carries.
        let ecs = fs::read_to_string(root.join("infra/environments/ecs.tf")).unwrap();
        assert!(ecs.contains(&format!("DB_SSLROOTCERT = \"{BUNDLE_IN_IMAGE}\"")), "ecs.tf: {ecs}");
        assert_eq!(build_arg(true), Some(("RDS_CA".to_owned(), "file".to_owned())));
        assert_eq!(build_arg(false), None);
    }

    #[test]
    fn a_bundle_without_certificates_is_refused_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("xtask-rds-ca-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bundle.pem");
        fs::write(&path, "not a certificate\n").unwrap();
        let err = format!("{:#}", read_bundle(&path).unwrap_err());
        assert!(err.contains("no PEM certificate") && err.contains(BUNDLE_VARIABLE), "{err}");
        let err = format!("{:#}", read_bundle(&dir.join("missing.pem")).unwrap_err());
        assert!(err.contains("truststore.pki.rds.amazonaws.com"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
