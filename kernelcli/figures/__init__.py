"""Figures for learning what a convolution does: text, number grids, colour
cells and scale bars drawn with Pillow (:mod:`~kernelcli.figures.draw`), the
animated convolution (:mod:`~kernelcli.figures.animation`) and kernels as
pictures (:mod:`~kernelcli.figures.kernel_sheet`). The numbers come from the
engine; these modules only draw them."""
