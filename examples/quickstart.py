# A first cell: a small DataFrame, a summary, and a plot (captured automatically).
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

rng = np.random.default_rng(7)
sales = pd.DataFrame({"month": range(1, 13), "revenue": rng.normal(100, 15, 12).round(1)})
print(sales.describe().loc[["mean", "min", "max"]])
sales.plot(x="month", y="revenue", marker="o", title="Revenue by month")
plt.show()
sales.to_csv("sales.csv", index=False)
sales["revenue"].sum()
