//! The fleet page of `xstate compat --matrix DIR --html FILE`.
