//! `vmlab image fetch`: official cloud images, verified and cached (placeholder, being written).
