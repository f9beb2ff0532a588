"""Pure scoring functions for the myositis studies: FSS, RAND-36, diaphragm, MIP, change, TIS."""

from imt_etl.scores.agreement import (
    BlandAltman,
    best_of,
    bland_altman,
    device_difference,
    device_mean,
)
from imt_etl.scores.change import (
    CHANGE_LABELS,
    ChangeCategory,
    change_categories,
    change_category,
    change_labels,
    percent_change,
)
from imt_etl.scores.diaphragm import thickening_fraction, thickening_fraction_series
from imt_etl.scores.fss import fss_score, fss_scores, fss_significant_fatigue
from imt_etl.scores.mip import (
    lln_mip,
    mip_below_lln,
    mip_magnitude,
    percent_predicted_mep,
    percent_predicted_mip,
    predicted_mep,
    predicted_mip,
)
from imt_etl.scores.rand36 import SCALES, rand36_recode, rand36_scales
from imt_etl.scores.tis import (
    CoreSet,
    TisConfig,
    TisResult,
    measure_points,
    tis_category,
    tis_three_measure,
    total_improvement_score,
)

__all__ = [
    "CHANGE_LABELS",
    "SCALES",
    "BlandAltman",
    "ChangeCategory",
    "CoreSet",
    "TisConfig",
    "TisResult",
    "best_of",
    "bland_altman",
    "change_categories",
    "change_category",
    "change_labels",
    "device_difference",
    "device_mean",
    "fss_score",
    "fss_scores",
    "fss_significant_fatigue",
    "lln_mip",
    "measure_points",
    "mip_below_lln",
    "mip_magnitude",
    "percent_change",
    "percent_predicted_mep",
    "percent_predicted_mip",
    "predicted_mep",
    "predicted_mip",
    "rand36_recode",
    "rand36_scales",
    "thickening_fraction",
    "thickening_fraction_series",
    "tis_category",
    "tis_three_measure",
    "total_improvement_score",
]
