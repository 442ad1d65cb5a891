//! What every stage that runs exported graphs on cached data reads first: the
//! export's and the cache's sidecars and the class list, checked to fit each other,
//! so that a mismatch stops the stage before any work with the values and the target
//! that remakes them.

use crate::error::{Error, Result};
use crate::sidecar::{ExportMeta, PreprocessMeta};
use crate::{CacheFile, ClassList, GraphFile, Layout};

pub struct Upstream {
    pub export: ExportMeta,
    pub cache: PreprocessMeta,
    pub classes: ClassList,
}

impl Upstream {
    pub fn read(layout: &Layout) -> Result<Self> {
        let export_path = layout.graph(GraphFile::Meta);
        let export = ExportMeta::read(&export_path).map_err(|e| e.made_by("export"))?;
        let cache = PreprocessMeta::read(&layout.cache(CacheFile::Meta))
            .map_err(|e| e.made_by("preprocess"))?;
        let classes = ClassList::read(&layout.cache(CacheFile::Classes))?;
        let exported = &export.settings;
        if exported.classes != classes.len() {
            return Err(Error::Invalid {
                path: export_path,
                message: format!(
                    "the graphs were exported for {} classes, but {} lists {}: `make export` \
                     exports them again for the data's classes",
                    exported.classes,
                    layout.cache(CacheFile::Classes).display(),
                    classes.len()
                ),
            });
        }
        if exported.image_size != cache.settings.image_size {
            return Err(Error::Invalid {
                path: export_path,
                message: format!(
                    "the graphs take {}-pixel images, but {} holds {}-pixel ones: IMAGE_SIZE \
                     differs between export and preprocess (`make export preprocess \
                     IMAGE_SIZE=N` remakes both)",
                    exported.image_size,
                    layout.cache(CacheFile::Meta).display(),
                    cache.settings.image_size
                ),
            });
        }
        Ok(Self {
            export,
            cache,
            classes,
        })
    }
}
