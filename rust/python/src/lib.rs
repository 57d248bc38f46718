//! `hierdraft._core`: the PyO3 translation layer over hierdraft-core.
//!
//! No drafting logic lives here: inputs are validated and copied into Rust values
//! ([`convert`]), the GIL is released around real work, and each core error variant maps to a
//! Python exception ([`errors`]).

use pyo3::prelude::*;

mod attention;
mod convert;
mod defaults;
mod drafting;
mod errors;
mod gguf;
mod greedy_head;
mod kernels;
mod norm;
mod quant;
mod rotary;
mod session_table;
mod stores;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<stores::PyContextStore>()?;
    m.add_class::<stores::PyModelStore>()?;
    m.add_class::<stores::PyCorpusIndex>()?;
    m.add_class::<drafting::PyHierarchicalDrafter>()?;
    m.add_class::<drafting::PyDraftSession>()?;
    m.add_class::<drafting::PyDraftTree>()?;
    m.add_class::<session_table::PySessionTable>()?;
    m.add_function(wrap_pyfunction!(defaults::default_settings, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::linear_rows, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::kernels_use_simd, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::kernels_path, m)?)?;
    m.add_function(wrap_pyfunction!(norm::rms_norm, m)?)?;
    m.add_function(wrap_pyfunction!(rotary::rotary, m)?)?;
    m.add_function(wrap_pyfunction!(attention::attention, m)?)?;
    m.add_class::<quant::PyQuantTensor>()?;
    m.add_function(wrap_pyfunction!(quant::qlinear_group, m)?)?;
    m.add_class::<greedy_head::PyGreedyHead>()?;
    m.add_class::<gguf::PyGgufFile>()?;
    m.add_class::<gguf::PyGgufTensorInfo>()?;
    m.add(
        "GgufFormatError",
        m.py().get_type::<gguf::GgufFormatError>(),
    )?;
    m.add(
        "StoreFormatError",
        m.py().get_type::<errors::StoreFormatError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
