//! ImageNet: the names of the 1000 classes of the base model.

/// The ImageNet class names in the order of the base model's outputs, one a line:
/// torchvision's `_IMAGENET_CATEGORIES` (`torchvision/models/_meta.py`, torchvision
/// 0.29.2), the `categories` its `ResNet18_Weights.IMAGENET1K_V1.meta` lists.
const CLASS_NAMES: &str = include_str!("imagenet_classes.txt");

/// The 1000 ImageNet class names, by output index.
pub fn class_names() -> Vec<String> {
    CLASS_NAMES.lines().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_names_are_imagenets_thousand() {
        let names = class_names();
        assert_eq!(names.len(), 1000);
        assert_eq!((names[0].as_str(), names[281].as_str()), ("tench", "tabby"));
        assert_eq!(names[999], "toilet tissue");
    }
}
