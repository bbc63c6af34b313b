from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]

class InterpolationPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_PATH_LINEAR: _ClassVar[InterpolationPath]
    INTERPOLATION_PATH_SPHERICAL: _ClassVar[InterpolationPath]

class ScoreType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_TYPE_UNSPECIFIED: _ClassVar[ScoreType]
    SCORE_TYPE_NEGATIVE_ELBO: _ClassVar[ScoreType]
    SCORE_TYPE_NEGATIVE_IWAE: _ClassVar[ScoreType]
    SCORE_TYPE_RECONSTRUCTION_ERROR: _ClassVar[ScoreType]
    SCORE_TYPE_NEGATIVE_RECONSTRUCTION_PROBABILITY: _ClassVar[ScoreType]
    SCORE_TYPE_COMPLEXITY_CORRECTED: _ClassVar[ScoreType]
    SCORE_TYPE_COMBINED: _ClassVar[ScoreType]
    SCORE_TYPE_PATHWAY: _ClassVar[ScoreType]
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT64: DataType
INTERPOLATION_PATH_LINEAR: InterpolationPath
INTERPOLATION_PATH_SPHERICAL: InterpolationPath
SCORE_TYPE_UNSPECIFIED: ScoreType
SCORE_TYPE_NEGATIVE_ELBO: ScoreType
SCORE_TYPE_NEGATIVE_IWAE: ScoreType
SCORE_TYPE_RECONSTRUCTION_ERROR: ScoreType
SCORE_TYPE_NEGATIVE_RECONSTRUCTION_PROBABILITY: ScoreType
SCORE_TYPE_COMPLEXITY_CORRECTED: ScoreType
SCORE_TYPE_COMBINED: ScoreType
SCORE_TYPE_PATHWAY: ScoreType

class Tensor(_message.Message):
    __slots__ = ("shape", "data", "dtype")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    dtype: DataType
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., dtype: _Optional[_Union[DataType, str]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model", "x", "num_samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    x: Tensor
    num_samples: int
    seed: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., num_samples: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("model", "z_mean", "z_logvar", "z_samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    Z_MEAN_FIELD_NUMBER: _ClassVar[int]
    Z_LOGVAR_FIELD_NUMBER: _ClassVar[int]
    Z_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    z_mean: Tensor
    z_logvar: Tensor
    z_samples: Tensor
    seed: int
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., z_mean: _Optional[_Union[Tensor, _Mapping]] = ..., z_logvar: _Optional[_Union[Tensor, _Mapping]] = ..., z_samples: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class BernoulliParams(_message.Message):
    __slots__ = ("probs",)
    PROBS_FIELD_NUMBER: _ClassVar[int]
    probs: Tensor
    def __init__(self, probs: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class GaussianParams(_message.Message):
    __slots__ = ("mean", "scale")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    mean: Tensor
    scale: Tensor
    def __init__(self, mean: _Optional[_Union[Tensor, _Mapping]] = ..., scale: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("model", "z", "num_samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    z: Tensor
    num_samples: int
    seed: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., z: _Optional[_Union[Tensor, _Mapping]] = ..., num_samples: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("model", "bernoulli", "gaussian", "x_samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BERNOULLI_FIELD_NUMBER: _ClassVar[int]
    GAUSSIAN_FIELD_NUMBER: _ClassVar[int]
    X_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    bernoulli: BernoulliParams
    gaussian: GaussianParams
    x_samples: Tensor
    seed: int
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., bernoulli: _Optional[_Union[BernoulliParams, _Mapping]] = ..., gaussian: _Optional[_Union[GaussianParams, _Mapping]] = ..., x_samples: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "n", "seed", "temperature", "chunk_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    n: int
    seed: int
    temperature: float
    chunk_size: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("model", "z", "x_mean", "x", "seed", "offset")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    X_MEAN_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    z: Tensor
    x_mean: Tensor
    x: Tensor
    seed: int
    offset: int
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., z: _Optional[_Union[Tensor, _Mapping]] = ..., x_mean: _Optional[_Union[Tensor, _Mapping]] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("model", "x_start", "z_start", "x_end", "z_end", "steps", "path", "num_samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_START_FIELD_NUMBER: _ClassVar[int]
    Z_START_FIELD_NUMBER: _ClassVar[int]
    X_END_FIELD_NUMBER: _ClassVar[int]
    Z_END_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    x_start: Tensor
    z_start: Tensor
    x_end: Tensor
    z_end: Tensor
    steps: int
    path: InterpolationPath
    num_samples: int
    seed: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., x_start: _Optional[_Union[Tensor, _Mapping]] = ..., z_start: _Optional[_Union[Tensor, _Mapping]] = ..., x_end: _Optional[_Union[Tensor, _Mapping]] = ..., z_end: _Optional[_Union[Tensor, _Mapping]] = ..., steps: _Optional[int] = ..., path: _Optional[_Union[InterpolationPath, str]] = ..., num_samples: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class InterpolateResponse(_message.Message):
    __slots__ = ("model", "t", "z", "x_mean", "x_samples", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    X_MEAN_FIELD_NUMBER: _ClassVar[int]
    X_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    t: _containers.RepeatedScalarFieldContainer[float]
    z: Tensor
    x_mean: Tensor
    x_samples: Tensor
    seed: int
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., t: _Optional[_Iterable[float]] = ..., z: _Optional[_Union[Tensor, _Mapping]] = ..., x_mean: _Optional[_Union[Tensor, _Mapping]] = ..., x_samples: _Optional[_Union[Tensor, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class ElboRequest(_message.Message):
    __slots__ = ("model", "x", "k", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    x: Tensor
    k: int
    seed: int
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., k: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ElboResponse(_message.Message):
    __slots__ = ("model", "elbo", "reconstruction", "kl", "iwae", "iwae_standard_error", "elbo_bits_per_dim", "iwae_bits_per_dim", "k", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ELBO_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    IWAE_FIELD_NUMBER: _ClassVar[int]
    IWAE_STANDARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    ELBO_BITS_PER_DIM_FIELD_NUMBER: _ClassVar[int]
    IWAE_BITS_PER_DIM_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    elbo: _containers.RepeatedScalarFieldContainer[float]
    reconstruction: _containers.RepeatedScalarFieldContainer[float]
    kl: _containers.RepeatedScalarFieldContainer[float]
    iwae: _containers.RepeatedScalarFieldContainer[float]
    iwae_standard_error: _containers.RepeatedScalarFieldContainer[float]
    elbo_bits_per_dim: _containers.RepeatedScalarFieldContainer[float]
    iwae_bits_per_dim: _containers.RepeatedScalarFieldContainer[float]
    k: int
    seed: int
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., elbo: _Optional[_Iterable[float]] = ..., reconstruction: _Optional[_Iterable[float]] = ..., kl: _Optional[_Iterable[float]] = ..., iwae: _Optional[_Iterable[float]] = ..., iwae_standard_error: _Optional[_Iterable[float]] = ..., elbo_bits_per_dim: _Optional[_Iterable[float]] = ..., iwae_bits_per_dim: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ScoreAnomalyRequest(_message.Message):
    __slots__ = ("model", "x", "score", "false_positive_rate", "score_threshold", "seed", "return_feature_errors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RETURN_FEATURE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    x: Tensor
    score: ScoreType
    false_positive_rate: float
    score_threshold: float
    seed: int
    return_feature_errors: bool
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., score: _Optional[_Union[ScoreType, str]] = ..., false_positive_rate: _Optional[float] = ..., score_threshold: _Optional[float] = ..., seed: _Optional[int] = ..., return_feature_errors: _Optional[bool] = ...) -> None: ...

class ScoreAnomalyResponse(_message.Message):
    __slots__ = ("model", "score", "scores", "percentile", "p_value", "is_anomaly", "threshold", "false_positive_rate", "seed", "feature_errors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    IS_ANOMALY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    score: ScoreType
    scores: _containers.RepeatedScalarFieldContainer[float]
    percentile: _containers.RepeatedScalarFieldContainer[float]
    p_value: _containers.RepeatedScalarFieldContainer[float]
    is_anomaly: _containers.RepeatedScalarFieldContainer[bool]
    threshold: float
    false_positive_rate: float
    seed: int
    feature_errors: Tensor
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., score: _Optional[_Union[ScoreType, str]] = ..., scores: _Optional[_Iterable[float]] = ..., percentile: _Optional[_Iterable[float]] = ..., p_value: _Optional[_Iterable[float]] = ..., is_anomaly: _Optional[_Iterable[bool]] = ..., threshold: _Optional[float] = ..., false_positive_rate: _Optional[float] = ..., seed: _Optional[int] = ..., feature_errors: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class SplitMetrics(_message.Message):
    __slots__ = ("num_examples", "elbo_nats", "iwae_nll_nats", "iwae_k", "bits_per_dim")
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ELBO_NATS_FIELD_NUMBER: _ClassVar[int]
    IWAE_NLL_NATS_FIELD_NUMBER: _ClassVar[int]
    IWAE_K_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_DIM_FIELD_NUMBER: _ClassVar[int]
    num_examples: int
    elbo_nats: float
    iwae_nll_nats: float
    iwae_k: int
    bits_per_dim: float
    def __init__(self, num_examples: _Optional[int] = ..., elbo_nats: _Optional[float] = ..., iwae_nll_nats: _Optional[float] = ..., iwae_k: _Optional[int] = ..., bits_per_dim: _Optional[float] = ...) -> None: ...

class Quantile(_message.Message):
    __slots__ = ("level", "value")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    level: float
    value: float
    def __init__(self, level: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("edges", "counts")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreCalibration(_message.Message):
    __slots__ = ("score", "num_examples", "mean", "std", "quantiles", "histogram")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    score: ScoreType
    num_examples: int
    mean: float
    std: float
    quantiles: _containers.RepeatedCompositeFieldContainer[Quantile]
    histogram: Histogram
    def __init__(self, score: _Optional[_Union[ScoreType, str]] = ..., num_examples: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[Quantile, _Mapping]]] = ..., histogram: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("loc", "scale", "description")
    LOC_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    loc: _containers.RepeatedScalarFieldContainer[float]
    scale: _containers.RepeatedScalarFieldContainer[float]
    description: str
    def __init__(self, loc: _Optional[_Iterable[float]] = ..., scale: _Optional[_Iterable[float]] = ..., description: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "input_shape", "num_features", "latent_dim", "likelihood", "created_at", "validation", "test", "binarization", "calibration", "available_versions", "providers", "max_rows", "max_k", "max_row_samples", "max_sample_n", "max_stream_sample_n", "preprocessing", "max_request_bytes", "max_reply_bytes", "scores", "default_score", "latent_map")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    BINARIZATION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_ROW_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLE_N_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_SAMPLE_N_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SCORE_FIELD_NUMBER: _ClassVar[int]
    LATENT_MAP_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_features: int
    latent_dim: int
    likelihood: str
    created_at: str
    validation: SplitMetrics
    test: SplitMetrics
    binarization: str
    calibration: _containers.RepeatedCompositeFieldContainer[ScoreCalibration]
    available_versions: _containers.RepeatedScalarFieldContainer[str]
    providers: _containers.RepeatedScalarFieldContainer[str]
    max_rows: int
    max_k: int
    max_row_samples: int
    max_sample_n: int
    max_stream_sample_n: int
    preprocessing: Preprocessing
    max_request_bytes: int
    max_reply_bytes: int
    scores: _containers.RepeatedCompositeFieldContainer[ScoreFacts]
    default_score: ScoreType
    latent_map: LatentMap
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_features: _Optional[int] = ..., latent_dim: _Optional[int] = ..., likelihood: _Optional[str] = ..., created_at: _Optional[str] = ..., validation: _Optional[_Union[SplitMetrics, _Mapping]] = ..., test: _Optional[_Union[SplitMetrics, _Mapping]] = ..., binarization: _Optional[str] = ..., calibration: _Optional[_Iterable[_Union[ScoreCalibration, _Mapping]]] = ..., available_versions: _Optional[_Iterable[str]] = ..., providers: _Optional[_Iterable[str]] = ..., max_rows: _Optional[int] = ..., max_k: _Optional[int] = ..., max_row_samples: _Optional[int] = ..., max_sample_n: _Optional[int] = ..., max_stream_sample_n: _Optional[int] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., max_request_bytes: _Optional[int] = ..., max_reply_bytes: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[ScoreFacts, _Mapping]]] = ..., default_score: _Optional[_Union[ScoreType, str]] = ..., latent_map: _Optional[_Union[LatentMap, _Mapping]] = ...) -> None: ...

class LatentMap(_message.Message):
    __slots__ = ("rows", "num_rows", "mean", "directions")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    rows: str
    num_rows: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    directions: _containers.RepeatedCompositeFieldContainer[LatentDirection]
    def __init__(self, rows: _Optional[str] = ..., num_rows: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., directions: _Optional[_Iterable[_Union[LatentDirection, _Mapping]]] = ...) -> None: ...

class LatentDirection(_message.Message):
    __slots__ = ("unit", "sd", "variance_fraction")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    SD_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    unit: _containers.RepeatedScalarFieldContainer[float]
    sd: float
    variance_fraction: float
    def __init__(self, unit: _Optional[_Iterable[float]] = ..., sd: _Optional[float] = ..., variance_fraction: _Optional[float] = ...) -> None: ...

class ScoreFacts(_message.Message):
    __slots__ = ("score", "draws", "description")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DRAWS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    score: ScoreType
    draws: int
    description: str
    def __init__(self, score: _Optional[_Union[ScoreType, str]] = ..., draws: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class GetMonitoringRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class FlagRateMonitor(_message.Message):
    __slots__ = ("false_positive_rate", "rows", "flagged", "observed_rate", "p_value", "alarm")
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_RATE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    false_positive_rate: float
    rows: int
    flagged: int
    observed_rate: float
    p_value: float
    alarm: bool
    def __init__(self, false_positive_rate: _Optional[float] = ..., rows: _Optional[int] = ..., flagged: _Optional[int] = ..., observed_rate: _Optional[float] = ..., p_value: _Optional[float] = ..., alarm: _Optional[bool] = ...) -> None: ...

class TailExceedance(_message.Message):
    __slots__ = ("level", "rows_above", "window_rows")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_ABOVE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    level: float
    rows_above: int
    window_rows: int
    def __init__(self, level: _Optional[float] = ..., rows_above: _Optional[int] = ..., window_rows: _Optional[int] = ...) -> None: ...

class ScoreMonitor(_message.Message):
    __slots__ = ("model", "score", "calibration_rows", "window_capacity_rows", "window_rows", "rows_seen", "drift_statistic", "drift_p_value", "drift_alarm", "evaluations", "tail_exceedances", "flag_rates", "p_value_histogram")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_CAPACITY_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_SEEN_FIELD_NUMBER: _ClassVar[int]
    DRIFT_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    DRIFT_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_ALARM_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    TAIL_EXCEEDANCES_FIELD_NUMBER: _ClassVar[int]
    FLAG_RATES_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    model: ModelVersion
    score: ScoreType
    calibration_rows: int
    window_capacity_rows: int
    window_rows: int
    rows_seen: int
    drift_statistic: float
    drift_p_value: float
    drift_alarm: bool
    evaluations: int
    tail_exceedances: _containers.RepeatedCompositeFieldContainer[TailExceedance]
    flag_rates: _containers.RepeatedCompositeFieldContainer[FlagRateMonitor]
    p_value_histogram: PValueHistogram
    def __init__(self, model: _Optional[_Union[ModelVersion, _Mapping]] = ..., score: _Optional[_Union[ScoreType, str]] = ..., calibration_rows: _Optional[int] = ..., window_capacity_rows: _Optional[int] = ..., window_rows: _Optional[int] = ..., rows_seen: _Optional[int] = ..., drift_statistic: _Optional[float] = ..., drift_p_value: _Optional[float] = ..., drift_alarm: _Optional[bool] = ..., evaluations: _Optional[int] = ..., tail_exceedances: _Optional[_Iterable[_Union[TailExceedance, _Mapping]]] = ..., flag_rates: _Optional[_Iterable[_Union[FlagRateMonitor, _Mapping]]] = ..., p_value_histogram: _Optional[_Union[PValueHistogram, _Mapping]] = ...) -> None: ...

class PValueHistogram(_message.Message):
    __slots__ = ("upper_bounds", "counts", "sum")
    UPPER_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    upper_bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum: float
    def __init__(self, upper_bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., sum: _Optional[float] = ...) -> None: ...

class MonitoringResponse(_message.Message):
    __slots__ = ("enabled", "alpha", "step_rows", "scores")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    STEP_ROWS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    alpha: float
    step_rows: int
    scores: _containers.RepeatedCompositeFieldContainer[ScoreMonitor]
    def __init__(self, enabled: _Optional[bool] = ..., alpha: _Optional[float] = ..., step_rows: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[ScoreMonitor, _Mapping]]] = ...) -> None: ...
