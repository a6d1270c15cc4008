//! Property tests of the HTTP/2 decoder.
