//! XSAVE images: views, validation profiles, conversion, register decoding.
//!
//! Not implemented yet: issue 3.
