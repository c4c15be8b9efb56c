"""The ground floor: image files, colour conversion and the MS-SSIM limits that the codecs, the
network's loss, training and evaluation share. Imports nothing of the harness but its errors."""
