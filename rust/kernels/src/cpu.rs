//! Which instruction-set path this CPU takes: [`simd_available`] is the one runtime check every
//! kernel asks before running its AVX2 code.

/// True when this CPU has AVX2, FMA and F16C, so the kernels run their AVX2 code (otherwise they
/// run portable loops that give the same bits, slower; callers may choose another path).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
