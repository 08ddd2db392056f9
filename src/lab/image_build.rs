//! `vmlab image build`: an offline guest image (placeholder, being written).
