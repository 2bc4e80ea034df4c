//! FinWise Sync client library (see issue 5).
